"""TOTP verification, replay guard and lockout policy (pure, no clock)."""

from __future__ import annotations

import pytest

from bastion.mfa import (
    LockoutPolicy,
    MfaError,
    code_for_step,
    match_totp,
    new_totp_secret,
    provisioning_uri,
    qr_text,
    time_step,
)

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_800_000_015.0  # inside step 60_000_000


def test_current_code_accepted_and_returns_step() -> None:
    step = time_step(NOW)
    assert match_totp(SECRET, code_for_step(SECRET, step), NOW, None) == step


def test_drift_window() -> None:
    step = time_step(NOW)
    assert match_totp(SECRET, code_for_step(SECRET, step - 1), NOW, None) == step - 1
    assert match_totp(SECRET, code_for_step(SECRET, step + 1), NOW, None) == step + 1
    with pytest.raises(MfaError) as e:
        match_totp(SECRET, code_for_step(SECRET, step + 2), NOW, None)
    assert e.value.reason == "wrong-code"
    with pytest.raises(MfaError):
        match_totp(SECRET, code_for_step(SECRET, step - 1), NOW, None, valid_window=0)


def test_replay_guard_refuses_same_and_older_steps() -> None:
    step = time_step(NOW)
    code = code_for_step(SECRET, step)
    with pytest.raises(MfaError) as e:
        match_totp(SECRET, code, NOW, last_step=step)
    assert e.value.reason == "reused-code"
    with pytest.raises(MfaError) as e:
        match_totp(SECRET, code_for_step(SECRET, step - 1), NOW, last_step=step)
    assert e.value.reason == "reused-code"
    assert match_totp(SECRET, code_for_step(SECRET, step + 1), NOW, last_step=step) == step + 1


@pytest.mark.parametrize("bad", ["", "12345", "1234567", "abcdef", "12 34 5x"])
def test_malformed_codes(bad: str) -> None:
    with pytest.raises(MfaError) as e:
        match_totp(SECRET, bad, NOW, None)
    assert e.value.reason == "bad-format"


def test_wrong_secret_code_refused() -> None:
    other = new_totp_secret()
    step = time_step(NOW)
    code = code_for_step(other, step)
    near = {code_for_step(SECRET, step + d) for d in (-1, 0, 1)}
    if code not in near:
        with pytest.raises(MfaError):
            match_totp(SECRET, code, NOW, None)


def test_lockout_policy() -> None:
    policy = LockoutPolicy(max_failures=5, window=600, duration=900)
    assert policy.lock_until(4, NOW) is None
    assert policy.lock_until(5, NOW) == NOW + 900
    assert LockoutPolicy(max_failures=0).lock_until(100, NOW) is None


def test_enrolment_uri_and_qr() -> None:
    secret = new_totp_secret()
    uri = provisioning_uri(secret, "alice", "bastion")
    assert uri.startswith("otpauth://totp/bastion:alice?")
    assert f"secret={secret}" in uri
    qr = qr_text(uri)
    assert len(qr.splitlines()) > 20
