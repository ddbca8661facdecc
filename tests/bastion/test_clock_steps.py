"""The node's clock steps forward or back: time boxes, certificates and TOTP (row F7).

Every clock is injected: the time box takes its wall and monotonic clocks, the CA and
TOTP take ``now`` as an argument. The certificate cases end at a real OpenSSH target,
whose own (correct) clock is what judges a certificate.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bastion.ca import IssuedCertificate
from bastion.mfa import MfaError, code_for_step, match_totp, time_step
from bastion.session.timebox import LiveSession, LiveSessions
from bastion.store.models import GrantState
from bastion.target_setup import default_principal
from tests.bastion.test_certificates import _direct_ssh, _write
from tests.peers.bastion_node import BastionHarness

HOUR = 3600.0
START = 1_800_000_000.0


class Clocks:
    """A wall clock that an admin (or a broken NTP) can step, and a monotonic one."""

    def __init__(self) -> None:
        self.wall = START
        self.mono = 50.0

    def elapse(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def step(self, seconds: float) -> None:
        self.wall += seconds  # the monotonic clock does not move on a step


class Handle:
    """The session end of the time box: what the contractor would be told."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.ended: list[str] = []

    def notify(self, message: str) -> None:
        self.notes.append(message)

    def terminate(self, reason: str, message: str) -> None:
        self.ended.append(reason)


def _box(clocks: Clocks) -> LiveSessions:
    return LiveSessions(
        warn_before=(300.0, 60.0),
        idle_timeout=0.0,
        clock=lambda: clocks.wall,
        monotonic=lambda: clocks.mono,
    )


def _session(box: LiveSessions, clocks: Clocks, sid: str, grant: int, ends: float) -> Handle:
    h = Handle()
    box.add(LiveSession(sid, "alice", "web1", grant, ends, h, clocks.wall, clocks.wall))
    return h


def test_a_forward_step_ends_the_sessions_whose_grant_it_passes() -> None:
    clocks = Clocks()
    box = _box(clocks)
    short = _session(box, clocks, "s1", 1, START + HOUR)
    long = _session(box, clocks, "s2", 2, START + 5 * HOUR)
    states = {1: (GrantState.ACTIVE, START + HOUR), 2: (GrantState.ACTIVE, START + 5 * HOUR)}
    clocks.elapse(60)
    box.apply(states)
    assert short.ended == long.ended == []
    clocks.step(2 * HOUR)  # the wall clock jumps past grant 1's end
    box.apply(states)
    assert short.ended == ["grant-ended"]
    assert long.ended == []  # grant 2 has not ended, even by the stepped clock


def test_a_backward_step_does_not_keep_a_session_past_its_grant() -> None:
    clocks = Clocks()
    box = _box(clocks)
    h = _session(box, clocks, "s1", 1, START + 600)
    states = {1: (GrantState.ACTIVE, START + 600)}
    clocks.elapse(100)
    clocks.step(-2 * HOUR)  # the wall clock now says the grant has 2 h 8 min left
    box.apply(states)
    assert h.ended == [] and h.notes == []
    clocks.elapse(250)  # 350 s really elapsed: 250 s left, the 5-minute warning is due
    box.apply(states)
    assert len(h.notes) == 1 and "ends in 4 minute" in h.notes[0], h.notes
    clocks.elapse(250)  # 600 s really elapsed: the grant's end, whatever the wall says
    box.apply(states)
    assert h.ended == ["grant-ended"]
    assert clocks.wall < START  # the wall clock alone would have given it two more hours


def test_a_step_back_before_a_session_starts_is_not_undone() -> None:
    """The guard is per session: it judges by the wall clock the session started under."""
    clocks = Clocks()
    clocks.step(-HOUR)
    box = _box(clocks)
    h = _session(box, clocks, "s1", 1, START)
    clocks.elapse(HOUR - 1)
    box.apply({1: (GrantState.ACTIVE, START)})
    assert h.ended == []
    clocks.elapse(1)
    box.apply({1: (GrantState.ACTIVE, START)})
    assert h.ended == ["grant-ended"]


def _issue(bastion: BastionHarness, now: float, not_after: float) -> IssuedCertificate:
    return bastion.ca.issue(
        principal=default_principal("web1"),
        key_id="clock-step@web1",
        now=now,
        lifetime=120,
        backdate=30,
        not_after=not_after,
        source_addresses=("127.0.0.1",),
        permit_pty=False,
    )


@pytest.mark.integration
def test_a_node_clock_stepped_back_cannot_revive_an_ended_grant(
    bastion: BastionHarness, tmp_path: Path
) -> None:
    real = time.time()
    grant_end = real - 600  # the grant ended ten minutes ago
    # forward or correct: the CA refuses to issue for an ended grant
    for now in (real, real + HOUR):
        with pytest.raises(ValueError, match="grant ends before"):
            _issue(bastion, now, grant_end)
    # stepped back an hour, the node still believes in the grant and issues, but the
    # certificate never reaches past the grant's end, and the target's clock refuses it
    cert = _issue(bastion, real - HOUR, grant_end)
    assert cert.valid_before <= grant_end
    r = _direct_ssh(_write(cert, tmp_path), bastion.targets["web1"].port)
    assert r.returncode == 255 and b"cert-ok" not in r.stdout
    # the control case: the same call with a live grant is accepted by the same target
    live = _issue(bastion, real, real + HOUR)
    ok = _direct_ssh(_write(live, tmp_path), bastion.targets["web1"].port)
    assert ok.returncode == 0 and ok.stdout == b"cert-ok\n", ok.stderr


SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_totp_accepts_only_the_window_of_the_clock_it_reads() -> None:
    real = START + 15
    step = time_step(real)
    code = code_for_step(SECRET, step)  # what the phone shows
    assert match_totp(SECRET, code, real, None) == step
    # node clock stepped forward or back by more than one 30 s step: the phone's code
    # is outside the window and refused, never accepted on a guess
    for offset in (-HOUR, -61.0, 61.0, HOUR):
        with pytest.raises(MfaError) as err:
            match_totp(SECRET, code, real + offset, None)
        assert err.value.reason == "wrong-code"
    # within one step either side (ordinary drift) it is accepted
    for offset in (-30.0, 30.0):
        assert match_totp(SECRET, code, real + offset, None) == step


def test_a_backward_step_cannot_replay_a_used_totp_code() -> None:
    real = START + 15
    step = time_step(real)
    used = match_totp(SECRET, code_for_step(SECRET, step), real, None)
    # an hour back, the codes of that hour match their steps again, but each is at or
    # before the last step used: refused until the clock passes the last login
    back = real - HOUR
    with pytest.raises(MfaError) as err:
        match_totp(SECRET, code_for_step(SECRET, time_step(back)), back, used)
    assert err.value.reason == "reused-code"
    with pytest.raises(MfaError) as err:
        match_totp(SECRET, code_for_step(SECRET, step), back, used)
    assert err.value.reason == "wrong-code"  # the used code is far outside the window
    later = real + 30
    assert match_totp(SECRET, code_for_step(SECRET, step + 1), later, used) == step + 1
