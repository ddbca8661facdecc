"""``bastion sessions search`` finds what real sessions typed, showed, returned and moved.

A real node (capture_rows and a mask pattern on), real OpenSSH and PostgreSQL 15
targets and real clients: ``ssh -tt`` with coloured output and full-screen
programs (``less``, ``top``), ``psql`` with captured rows, an ``sftp`` upload. Each
kind is found by the CLI once the node's background thread has indexed the
sealed session, at an offset inside the session; a masked value is found nowhere.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import psycopg
import pytest

from bastion.control.client import ControlClient
from bastion.control.messages import ControlError
from bastion.store.models import Credset, Role, SessionRecord, TargetKind
from tests.peers.bastion_node import BastionHarness, Contractor, make_harness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

PROMPT = "\x1b\\[\\?2004h"  # bash's readline switching bracketed paste on: a prompt
AWS_KEY = "AKIAQWERTYUIOPASDFGH"  # matches mask_patterns wherever it shows
PASSWORD = "PW-hidden-5521"  # a column masked by mask_columns (*password*)
SETUP = f"""
CREATE TABLE customers (id int PRIMARY KEY, name text, password text);
INSERT INTO customers VALUES (4711, 'jane-roe-4711', '{PASSWORD}');
"""  # noqa: S608  fixed test data


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer
) -> Iterator[tuple[BastionHarness, PgTargets]]:
    overrides = {
        "capture_rows = 0": "capture_rows = 20",
        "mask_patterns = []": "mask_patterns = ['\\bAKIA[0-9A-Z]{16}\\b']",
    }
    harness = make_harness(tmp_path_factory.mktemp("search"), overrides=overrides)
    try:
        role, password = f"srch_{secrets.token_hex(3)}", secrets.token_urlsafe(9)
        pg_server.create_role(role, password)
        db = pg_server.create_database(owner=role)
        with psycopg.connect(pg_server.dsn(db, role, password), autocommit=True) as conn:
            conn.execute(SETUP)
        harness.store.add_target(
            name="pgs", kind=TargetKind.POSTGRES, host=pg_server.host, port=pg_server.port,
            logins=[], principal="pgs", database=db, credsets=[Credset("rw", role, password)],
            now=time.time(),
        )  # fmt: skip
        yield harness, PgTargets(harness, pg_server, role, role)
    finally:
        harness.close()


def _indexed(b: BastionHarness, who: Contractor) -> SessionRecord:
    """The contractor's newest session, once the node has indexed it."""
    b.wait_audit(who.name, "session.end", 30)
    [session] = b.store.list_sessions(user=who.name)
    wait_until(lambda: b.store.is_indexed(session.id), 30, f"session {session.id} indexed")
    return session


def search(b: BastionHarness, *args: str) -> list[dict[str, Any]]:
    done = b.cli("sessions", "search", *args, "--json")
    assert done.returncode == 0, done.stderr
    hits: list[dict[str, Any]] = json.loads(done.stdout)
    return hits


def _within(hit: dict[str, Any], session: SessionRecord) -> bool:
    assert session.ended_at is not None
    return 0 <= float(hit["offset"]) <= session.ended_at - session.started_at + 1


def test_terminal_output_with_colours_and_full_screen_programs(
    node: tuple[BastionHarness, PgTargets],
) -> None:
    b, _ = node
    who = b.contractor("pty")
    b.grant(who, "web1")
    pty = who.ssh_pty("web1")
    pty.sendline("printf '\\033[31mred-%s\\033[0m\\n' 4711")
    pty.expect("red-")
    pty.sendline("printf 'fullscreen-%s\\n' 8842 > /tmp/search-less-$$.txt")
    pty.sendline("TERM=xterm less /tmp/search-less-$$.txt")
    pty.expect("fullscreen-8842")
    pty.send("q")
    pty.expect(PROMPT)  # bash is back (bracketed paste on again): keys reach the shell
    pty.sendline("TERM=xterm top -b -n 1 >/dev/null; TERM=xterm top -n 2 -d 0.2")
    pty.expect("load average")
    pty.expect(PROMPT)
    pty.sendline("echo AKIA$(echo QWERTYUIOP)ASDFGH; rm -f /tmp/search-less-$$.txt; exit")
    pty.expect(pexpect.EOF)
    session = _indexed(b, who)

    [hit] = search(b, "red-4711", "--user", who.name)
    assert hit["kind"] == "output" and hit["text"] == "red-4711"  # as displayed: no escapes
    assert hit["session_id"] == session.id and _within(hit, session)
    hits = search(b, "fullscreen-8842", "--user", who.name, "--in", "output")
    assert [h["kind"] for h in hits] == ["output"]  # shown only inside less
    assert search(b, "load average", "--user", who.name, "--in", "output")
    assert [h["kind"] for h in search(b, "exit", "--user", who.name, "--in", "commands")]
    assert search(b, "QWERTYUIOPASDFGH") == []  # masked before indexing
    assert search(b, AWS_KEY) == []
    audit = b.audit("test-admin", "session.search")
    assert any(
        e.details["text"] == "red-4711" and e.details["hits"] == 1 for e in audit
    )  # every search is audited with its text and hit count


def test_psql_statements_and_captured_rows(node: tuple[BastionHarness, PgTargets]) -> None:
    b, pg = node
    who = b.contractor("db")
    pg.grant(who, "pgs", "rw")
    token = pg.token(who, "pgs")
    done = pg.psql(who, token, "SELECT id, name, password FROM customers;\n", database="pgs")
    assert done.returncode == 0, done.stderr
    assert PASSWORD in done.stdout  # the contractor saw it; the index must not have it
    session = _indexed(b, who)
    [row] = search(b, "jane-roe", "--in", "results")
    assert row["text"] == "4711 | jane-roe-4711 | ***" and _within(row, session)
    [query] = search(b, "FROM customers", "--user", who.name, "--in", "queries")
    assert query["session_id"] == session.id
    assert search(b, PASSWORD) == [] and search(b, "hidden-55") == []


def test_sftp_upload_file_name(node: tuple[BastionHarness, PgTargets], tmp_path: Path) -> None:
    b, _ = node
    who = b.contractor("sf")
    b.grant(who, "web1", options=("sftp",))
    local = tmp_path / "payload.txt"
    local.write_text("payload-content-6613\n")
    batch = tmp_path / "batch"
    remote = f"/tmp/upload-9931-{secrets.token_hex(3)}.txt"
    back = tmp_path / "back.txt"
    batch.write_text(f"put {local} {remote}\nget {remote} {back}\nrm {remote}\n")
    done = subprocess.run(
        [
            "sftp", *who.ssh_args(), "-o", "BatchMode=no", "-b", str(batch), "-P", str(b.port),
            f"{who.login_name('web1')}@127.0.0.1",
        ],
        env=who.ssh_env(), capture_output=True, stdin=subprocess.DEVNULL, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    session = _indexed(b, who)
    assert back.read_text() == "payload-content-6613\n"
    hits = search(b, "upload-9931", "--in", "files", "--user", who.name)
    assert {h["text"] for h in hits} == {remote}
    assert search(b, "payload-content-6613") == []  # a transfer's data is files, not a screen
    assert all(h["session_id"] == session.id and _within(h, session) for h in hits)


async def test_control_api_search_is_for_auditors_and_admins_and_audited(
    node: tuple[BastionHarness, PgTargets],
) -> None:
    b, _ = node
    who = b.contractor("ctl")
    b.grant(who, "web1")
    done = who.ssh("web1", "echo control-$((7000+1))")
    assert b"control-7001" in done.stdout
    session = _indexed(b, who)
    sock = b.control_socket()
    auditor = b.contractor("aud", Role.AUDITOR)
    async with await ControlClient.connect(sock, user=auditor.name) as client:
        hits = await client.search("control-7001", kinds="commands,output")
        again = await client.search(r"control-\d{4}$", regex=True, user=who.name)
    assert [(h.session_id, h.kind, h.text) for h in hits] == [
        (session.id, "output", "control-7001")
    ]
    assert [(h.kind, h.text) for h in again] == [("output", "control-7001")]  # not the command
    approver = b.contractor("apr", Role.APPROVER)
    async with await ControlClient.connect(sock, user=approver.name) as client:
        with pytest.raises(ControlError, match="needs the admin or auditor role"):
            await client.search("control-7001")
    [row] = [e for e in b.audit(auditor.name, "session.search") if e.details["regex"] is False]
    assert row.details["text"] == "control-7001" and row.details["hits"] == 1
    assert row.details["via"] == "control" and row.details["kinds"] == "commands,output"
