"""Acceptance: ``bastion access`` says exactly what the node lets through, checked by connecting.

Seeded random states (the seed is in every failure message; ``BASTION_ACCESS_SEED``
picks another): a few users, each active, disabled, locked or with an ended
engagement, each with a random grant per target (none, usable, not yet started,
expired, revoked) and maybe a grant under a profile whose selector matches the
targets randomly labelled for it, on targets that reach the harness's real sshd,
one of which is removed. For every (user, target) pair the answer is computed right before a stock
``ssh USER%TARGET@bastion true``: "reachable" must mean exit 0, and a refusal must
carry the words the report gives as the reason. One node and its sshd serve all.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass

import pytest

from bastion.access_report import UserAccess
from bastion.effective_access import user_access, who_can_reach
from bastion.store.models import TargetKind
from tests.peers.bastion_node import LOGIN, BastionHarness, Contractor

pytestmark = pytest.mark.integration

STATES = ("active", "active", "active", "disabled", "locked", "ended")
GRANTS = ("none", "usable", "usable", "not-started", "expired", "revoked")
HOUR = 3600.0
DEFAULT_SEED = 1414
"""Exercises both answers, with and without a profile grant in play (checked below)."""


@dataclass(frozen=True)
class Case:
    """One random world: what each user is and holds."""

    states: dict[str, str]
    grants: dict[tuple[str, str], str]
    removed: str


def add_targets(bastion: BastionHarness, prefix: str) -> list[str]:
    """Three more targets on the harness's two sshd (same principal and host key)."""
    names = []
    for i, upstream in enumerate(("web1", "web2", "web1")):
        real = bastion.target(upstream)
        name = f"{prefix}t{i}"
        bastion.store.add_target(
            name=name, kind=TargetKind.SSH, host=real.host, port=real.port, logins=[LOGIN],
            principal=real.principal, host_keys=list(real.host_keys), now=time.time(),
        )  # fmt: skip
        names.append(name)
    return names


def make_world(
    bastion: BastionHarness,
    rng: random.Random,
    users: list[Contractor],
    targets: list[str],
    prefix: str,
) -> Case:
    store, now = bastion.store, time.time()
    states = {u.name: rng.choice(STATES) for u in users}
    grants: dict[tuple[str, str], str] = {}
    profile = store.add_profile(
        name=f"{prefix}p", selector=f"team={prefix}", logins=[LOGIN], created_by="test", now=now
    )
    for t in targets:  # the profile reaches the targets labelled for it
        if rng.random() < 0.5:
            store.set_target_labels(t, {"team": prefix, "env": "test"})
    for u in users:
        if rng.random() < 0.5:
            start, seconds = rng.choice([(now - 60, HOUR), (now - 60, HOUR), (now + HOUR, HOUR)])
            store.add_grant(
                user_id=u.user.id, target_id=None, profile_id=profile.id, login=None,
                credset=None, not_before=start, not_after=start + seconds, reason="test",
                requested_by="test", approved_by="test", options=(), now=now,
            )  # fmt: skip
            grants[u.name, "profile"] = "usable" if start < now else "not-started"
        for t in targets:
            kind = grants[u.name, t] = rng.choice(GRANTS)
            if kind == "none":
                continue
            start, seconds = {
                "not-started": (now + HOUR, HOUR),
                "expired": (now - 2 * HOUR, HOUR),
            }.get(kind, (now - 60, HOUR))
            g = bastion.grant(u, t, start=start, seconds=seconds)
            if kind == "revoked":
                store.revoke_grant(g.id, "test", now - 1)
        state = states[u.name]
        if state == "disabled":
            store.set_user_disabled(u.name, True)
        elif state == "locked":
            store.lock_user(u.user.id, now + 600)
        elif state == "ended":
            store.set_engagement(u.name, sponsor="test", until=now - 1)
    removed = rng.choice(targets)
    store.remove_target(removed, now)
    return Case(states, grants, removed)


def verdict(access: UserAccess, target: str) -> tuple[bool, list[str]]:
    """Reachable?, and the words a refusal may carry (one of them must be there)."""
    first = [access.login_refused] if access.login_refused else []
    for t in access.targets:
        if t.target == target and not t.removed:
            return t.reachable, first + list(t.blocked)
    return False, first or [f"no grant for {target}"]


def test_access_answers_match_connections(bastion: BastionHarness) -> None:
    seed = int(os.environ.get("BASTION_ACCESS_SEED", DEFAULT_SEED))
    rng = random.Random(seed)
    checked = {True: 0, False: 0}
    via_profile = {True: 0, False: 0}
    for round_no in range(2):
        users = [bastion.contractor("ea") for _ in range(3)]
        prefix = f"ea{os.getpid() % 1000}r{round_no}"
        targets = add_targets(bastion, prefix)
        case = make_world(bastion, rng, users, targets, prefix)
        for t in targets:
            if t == case.removed:
                continue
            found = who_can_reach(bastion.store, t, time.time())
            for u in users:  # both questions give one answer
                mine = [a for a in found if a.user == u.name]
                expected = verdict(user_access(bastion.store, u.name, time.time()), t)[0]
                assert (bool(mine) and mine[0].targets[0].reachable) == expected, (seed, u, t)
        for u in users:
            for t in targets:
                access = user_access(bastion.store, u.name, time.time())
                full = user_access(bastion.store, u.name, time.time(), include_all=True)
                reachable, _ = verdict(access, t)
                assert verdict(full, t)[0] == reachable, (seed, u, t)  # --all only adds history
                words = verdict(full, t)[1]
                r = u.ssh("true", target=t, timeout=30)
                said = r.stderr.decode(errors="replace")
                profiled = (u.name, "profile")
                live = bastion.store.get_target(t)
                labelled = dict(live.labels) if live is not None else "-"
                where = (
                    f"seed {seed} round {round_no}: {u.name} ({case.states[u.name]}) on {t} "
                    f"(grant {case.grants[u.name, t]}, profile grant {case.grants.get(profiled)}"
                    f", labelled {labelled}, removed {case.removed})\n"
                    f"access: {json.dumps(full.targets, default=str)}\nnode said: {said}"
                )
                assert (r.returncode == 0) == reachable, where
                if not reachable:
                    assert any(w.split(";")[0] in said for w in words), where
                checked[reachable] += 1
                for tx in full.targets:
                    if tx.target == t and any(g.profile for g in tx.grants):
                        via_profile[reachable] += 1
    if seed == DEFAULT_SEED:  # another seed may be less varied; that one is not
        assert checked[True] and checked[False], checked
        assert via_profile[True] and via_profile[False], via_profile
