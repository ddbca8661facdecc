"""Per-source penalties and per-address blocks without a network: the policy over
explicit times, the state-store rows (SQLite and PostgreSQL), the config keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.config import load_config, render_config
from bastion.errors import ConfigError
from bastion.login_limits import parse_login_limits
from bastion.penalties import (
    AUTHFAIL,
    GRACE_EXCEEDED,
    NOAUTH,
    Penalties,
    PenaltyPolicy,
    parse_exempt,
    parse_penalties,
)
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.address_blocks import AddressBlock

# --- penalties ----------------------------------------------------------------------------


def test_penalties_accrue_to_min_before_a_source_is_refused() -> None:
    box = Penalties(PenaltyPolicy())  # authfail 5, noauth 1, grace-exceeded 10, min 15
    box.penalise("192.0.2.1", AUTHFAIL, 0.0)
    box.penalise("192.0.2.1", AUTHFAIL, 0.0)
    assert box.refusal("192.0.2.1", 1.0) is None  # 10 s accrued: below min
    box.penalise("192.0.2.1", AUTHFAIL, 0.5)  # 5 more, but 0.5 s of it already served
    assert box.refusal("192.0.2.1", 1.0) is None
    box.penalise("192.0.2.1", NOAUTH, 1.0)  # 15 s ahead now: enforced
    refusal = box.refusal("192.0.2.1", 1.0)
    assert refusal is not None and "192.0.2.1 is penalised" in refusal
    assert box.refusal("192.0.2.2", 1.0) is None  # another source is not touched
    assert box.refusal("192.0.2.1", 15.9) is not None
    assert box.refusal("192.0.2.1", 16.0) is None  # served its time
    assert box.penalised(16.0) == {}


def test_a_source_penalised_again_gets_a_doubled_period_up_to_max() -> None:
    box = Penalties(PenaltyPolicy(max=100.0))
    periods = []
    now = 0.0
    for _ in range(4):
        box.penalise("198.51.100.9", GRACE_EXCEEDED, now)
        box.penalise("198.51.100.9", GRACE_EXCEEDED, now)  # 20 s accrued: active
        until = box.penalised(now)["198.51.100.9"]
        periods.append(until - now)
        now = until
        assert box.refusal("198.51.100.9", now) is None  # served: admitted again
    assert periods == [20.0, 40.0, 80.0, 100.0]


def test_sources_are_keyed_per_ipv6_slash_64_and_exempt_networks_are_never_penalised() -> None:
    box = Penalties(PenaltyPolicy(), parse_exempt(("10.0.0.0/8",), "test"))
    for _ in range(20):
        box.penalise("10.1.2.3", AUTHFAIL, 0.0)
        box.penalise("2001:db8:0:1::5", NOAUTH, 0.0)
    assert box.refusal("10.1.2.3", 0.5) is None
    assert box.refusal("2001:db8:0:1::ffff", 0.5) is not None  # same /64
    assert box.refusal("2001:db8:0:2::5", 0.5) is None


def test_penalties_off_refuses_nobody() -> None:
    box = Penalties(parse_penalties("no", "test"))
    for _ in range(100):
        box.penalise("192.0.2.1", AUTHFAIL, 0.0)
    assert box.refusal("192.0.2.1", 0.0) is None


def test_penalties_are_written_as_openssh_writes_them() -> None:
    policy = parse_penalties("authfail:30s noauth:2 min:20", "login_limits.penalties")
    assert (policy.authfail, policy.noauth, policy.min, policy.max) == (30.0, 2.0, 20.0, 600.0)
    with pytest.raises(ConfigError, match="KIND:SECONDS"):
        parse_penalties("crash:90", "login_limits.penalties")
    with pytest.raises(ConfigError, match="below min"):
        parse_penalties("min:60 max:30", "login_limits.penalties")
    with pytest.raises(ConfigError, match="not an address or network"):
        parse_login_limits({"penalty_exempt": ["lb.example.com"]})


# --- the config file ------------------------------------------------------------------------


def _config(tmp_path: Path, old: str, new: str) -> Path:
    text = render_config("n", "127.0.0.1:2222")
    assert old in text
    path = tmp_path / "bastion.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_login_grace_is_the_documented_name_and_login_timeout_still_reads(tmp_path: Path) -> None:
    assert (
        load_config(_config(tmp_path, "login_grace = 30", "login_grace = 7")).ssh.login_timeout == 7
    )
    old = load_config(_config(tmp_path, "login_grace = 30", "login_timeout = 8"))
    assert old.ssh.login_timeout == 8
    both = _config(tmp_path, "login_grace = 30", "login_grace = 7\nlogin_timeout = 8")
    with pytest.raises(ConfigError, match="same setting; keep login_grace"):
        load_config(both)


def test_the_default_config_turns_both_limits_on(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "[login_limits]", "[login_limits]"))
    assert config.login_limits.address_max_failures == 20
    assert config.login_limits.penalties.enabled and config.login_limits.penalties.min == 15


# --- the state store ----------------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    url = (
        f"sqlite:///{tmp_path}/state.db"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    with open_store(url, SecretBox(SecretBox.generate_key())) as s:
        yield s


def _fail(store: Store, source: str, at: float, user: str = "u") -> AddressBlock | None:
    return store.record_address_failure(
        source, user, "wrong-code", at, max_failures=3, window=60, block_seconds=(10, 25)
    )


def test_failures_over_many_users_block_the_source_and_each_block_doubles(store: Store) -> None:
    assert _fail(store, "192.0.2.7", 0, "alice") is None
    assert _fail(store, "192.0.2.7", 1, "bob") is None
    assert _fail(store, "192.0.2.8", 1, "carol") is None  # another source counts apart
    first = store.record_address_failure(
        "192.0.2.7", "dave", "unknown-user", 2, max_failures=3, window=60, block_seconds=(10, 25)
    )
    assert first is not None and (first.until, first.strikes, first.failures) == (12, 1, 3)
    assert store.address_block("192.0.2.7", 5) == first
    assert store.address_block("192.0.2.8", 5) is None
    assert store.address_failure_count("192.0.2.7", 0) == 0  # a block starts the count over
    for at in (20, 21):
        assert _fail(store, "192.0.2.7", at) is None
    second = _fail(store, "192.0.2.7", 22)
    third = [_fail(store, "192.0.2.7", t) for t in (40, 41, 42)][-1]
    assert second is not None and second.until == 22 + 20  # doubled
    assert third is not None and third.until == 42 + 25  # capped
    assert [b.source for b in store.address_blocks(50)] == ["192.0.2.7"]
    assert store.unblock_address("192.0.2.7")
    assert store.address_block("192.0.2.7", 50) is None
    assert not store.unblock_address("192.0.2.7")


def test_failures_older_than_the_window_do_not_count(store: Store) -> None:
    assert _fail(store, "192.0.2.9", 0) is None
    assert _fail(store, "192.0.2.9", 1) is None
    assert _fail(store, "192.0.2.9", 100) is None  # the first two fell out of the window
    assert store.address_failure_count("192.0.2.9", 0) == 1
