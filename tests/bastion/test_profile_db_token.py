"""``db-token`` through a profile grant: real node, stock ssh, real psql, real PostgreSQL 15.

A database target labelled for a profile is reached under a profile grant like an
SSH host: ``db-token`` (no arguments) lists it, ``db-token pg1`` issues a token
under the profile grant, psql connects with it, and once the label is removed the
same token no longer lets anyone in (the grant is checked at every connection).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.peers.bastion_node import BastionHarness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def pg(bastion: BastionHarness, pg_server: PgServer) -> Iterator[PgTargets]:
    """pg1/pg2 behind the shared bastion."""
    yield PgTargets.create(bastion, pg_server)


def _cli(bastion: BastionHarness, *args: str) -> str:
    done = bastion.cli(*args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_db_token_under_a_profile_grant_and_psql_connects(pg: PgTargets) -> None:
    bastion = pg.harness
    key = f"pdb{secrets.token_hex(3)}"
    profile = f"{key}-ro"
    _cli(bastion, "target", "label", "pg1", f"{key}=yes")
    _cli(bastion, "profile", "add", profile, "--select", f"{key}=yes", "--credset", "readonly")
    who = bastion.contractor("pdt")
    _cli(bastion, "grant", "add", who.name, "--profile", profile, "--for", "1h")
    grant = next(g for g in bastion.store.list_grants(user_id=who.user.id))
    assert grant.profile_name == profile and grant.target_id is None

    listed = who.ssh("db-token")
    assert listed.returncode == 2, listed.stderr
    text = listed.stderr.decode()
    assert "databases you can get a token for now" in text
    assert f"pg1 readonly\tgrant #{grant.id} until" in text and f"profile {profile}" in text
    grants = who.ssh("grants")
    assert grants.returncode == 0, grants.stderr
    (line,) = grants.stdout.decode().splitlines()
    assert line.startswith(f"#{grant.id}\tpg1\tpostgres\treadonly\t")
    assert line.endswith(f"profile {profile}")

    token = pg.token(who, "pg1")
    issued = bastion.wait_audit(who.name, "db-token.issue")
    assert issued[0].details["grant"] == grant.id and issued[0].details["credset"] == "readonly"
    done = pg.psql(who, token, "SELECT current_user AS who;\n", args=["-At"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == pg.ro_role  # the profile's credential set, nothing more

    refused = who.ssh("db-token", "pg2")
    assert refused.returncode == 1 and b"no grant for pg2" in refused.stderr

    _cli(bastion, "target", "label", "pg1", "--remove", key)
    after = pg.psql(who, token, "SELECT 1;\n", args=["-At"])
    assert after.returncode != 0 and "no grant for pg1" in after.stderr, after.stderr
