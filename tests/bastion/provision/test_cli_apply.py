"""``bastion apply`` end to end on a real SQLite store (in-process ``main``).

From empty state, then unchanged (no changes, no audit rows), then a user removed
under --prune (disabled, history kept), and --dry-run changing nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from bastion.cli import main
from bastion.config import load_config
from bastion.secretbox import SecretBox
from bastion.store import Store, open_store
from bastion.store.models import SessionRecord

EXAMPLE = Path(__file__).parents[3] / "deploy" / "apply-example.toml"


@pytest.fixture()
def node_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Path:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL", "BASTION_ACTOR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APPDB_RO_PASSWORD", "ro-secret")
    node = tmp_path / "node"
    assert main(["init", "--dir", str(node), "--listen", "127.0.0.1:2299"]) == 0
    capsys.readouterr()
    return node


@pytest.fixture()
def example(tmp_path: Path) -> Path:
    """The documented example, verbatim, next to the password file it references."""
    where = tmp_path / "prov"
    (where / "secrets").mkdir(parents=True)
    (where / "secrets" / "appdb-rw.password").write_text("rw-secret\n")
    return Path(shutil.copy(EXAMPLE, where / "apply.toml"))


def bastion(node: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main([*args, "--config", str(node / "bastion.toml")])
    cap = capsys.readouterr()
    return code, cap.out + cap.err


def as_json(node: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out = bastion(node, capsys, *args, "--json")
    assert code == 0, out
    return json.loads(out)


def store_of(node: Path) -> Store:
    config = load_config(str(node / "bastion.toml"))
    return open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))


def database_bytes(node: Path) -> str:
    """A digest of the SQLite store's files (the database and any write-ahead log)."""
    h = hashlib.sha256()
    files = sorted(node.glob("state.db*"))
    assert files, f"no SQLite store in {node}"
    for path in files:
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def state(node: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Everything apply can touch, as the CLI lists it."""
    return {
        "users": as_json(node, capsys, "user", "list"),
        "targets": as_json(node, capsys, "target", "list"),
        "grants": as_json(node, capsys, "grant", "list"),
        "audit": as_json(node, capsys, "audit"),
    }


def test_apply_the_example_then_nothing_then_prune_and_dry_run(
    node_dir: Path, example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = bastion(node_dir, capsys, "apply", str(example))
    assert code == 0, out
    assert "+ user sam: approver, 1 key(s), groups sre" in out
    assert "+ user ann: contractor, 1 key(s), groups web, sponsor sam, until 2030-06-30" in out
    assert "+ target appdb: postgres 10.0.0.9:5432, database app, credset ro (env:APPDB_RO" in out
    assert "+ grant ann -> web1 as deploy: until 2030-06-30 00:00:00 UTC, allow scp,sftp" in out
    assert "ro-secret" not in out and "rw-secret" not in out
    assert "+ target web1: ssh 10.0.0.5:22, logins deploy,www-data, label env=staging, label" in out
    assert "+ profile prod-db: select env=prod,role=db, credset ro, max 12h00m, approvals 2" in out
    assert "+ grant ann -> profile staging-web: until 2030-06-30 00:00:00 UTC, allow scp" in out
    assert "applied 11 change(s) in one transaction (11 audit rows)" in out

    users = {u["name"]: u for u in as_json(node_dir, capsys, "user", "list")}
    assert users["ann"]["sponsor"] == "sam" and users["ann"]["org"] == "Acme"
    assert users["ann"]["groups"] == ["web"] and users["ann"]["state"] == "active"
    assert users["raj"]["engagement_until"] == 1901210400.0
    targets = {t["name"]: t for t in as_json(node_dir, capsys, "target", "list")}
    assert targets["web1"]["logins"] == ["deploy", "www-data"]
    assert targets["appdb"]["credsets"][1]["name"] == "rw"
    with store_of(node_dir) as store:
        db = store.get_target("appdb")
        assert db is not None
        assert {c.name: c.password for c in db.credsets} == {"ro": "ro-secret", "rw": "rw-secret"}
    assert targets["web1"]["labels"] == {"env": "staging", "role": "web"}
    grants = as_json(node_dir, capsys, "grant", "list")
    assert [
        (g["user_name"], g["target_name"], g["profile_name"], g["requested_by"]) for g in grants
    ] == [
        ("ann", "web1", None, "apply"),
        ("raj", "appdb", None, "apply"),
        ("ann", None, "staging-web", "apply"),
    ]
    with store_of(node_dir) as store:
        assert [t.name for t in store.targets_reached_by("staging-web")] == ["web1"]
    audit = as_json(node_dir, capsys, "audit", "--action", "user.add")
    assert {r["subject"] for r in audit} == {"sam", "ann", "raj"}
    details = audit[0]["details"]
    assert details["via"] == "apply" and details["file"] == str(example)
    assert len(details["sha256"]) == 64 and details["totp"] == "not enrolled"

    # Unchanged: nothing to do, nothing written.
    before = state(node_dir, capsys)
    code, out = bastion(node_dir, capsys, "apply", str(example))
    assert code == 0 and out == "no changes\n", out
    assert state(node_dir, capsys) == before

    # raj leaves the file: without --prune he is left alone and the plan says so.
    text = example.read_text()
    start = text.index("[users.raj]")
    trimmed = text[:start] + text[text.index("# --- targets") :]
    raj_grant = trimmed.index('[[grants]]\nuser = "raj"')
    end = trimmed.index("[[grants]]", raj_grant + 1)
    example.write_text(trimmed[:raj_grant] + trimmed[end:])
    code, out = bastion(node_dir, capsys, "apply", str(example))
    assert code == 0
    assert out.startswith("no changes\nleft alone (not in the file; --prune disables or removes")
    assert "standing grants #2; users raj" in out
    assert state(node_dir, capsys) == before

    # A live session of raj, to see it asked to end and kept in history.
    with store_of(node_dir) as store:
        raj, db = store.get_user("raj"), store.get_target("appdb")
        assert raj is not None and db is not None
        store.start_session(
            SessionRecord(
                id="s-raj", user_id=raj.id, user_name="raj", target_id=db.id,
                target_name="appdb", grant_id=2, node="n1", protocol="postgres", login=None,
                client_addr="127.0.0.1", started_at=time.time(),
            )
        )  # fmt: skip

    # --dry-run --prune prints the plan and changes nothing (not even a byte of the store).
    before = state(node_dir, capsys)
    digest = database_bytes(node_dir)
    code, out = bastion(node_dir, capsys, "apply", str(example), "--prune", "--dry-run")
    assert database_bytes(node_dir) == digest
    assert code == 0
    assert out.splitlines() == [
        "- grant #2 raj -> appdb credset ro: not in the file",
        "- user raj: not in the file: disabled, live sessions end",
        "2 change(s): 0 to add, 0 to change, 2 to remove or disable",
        "dry run: nothing was changed; run without --dry-run to apply",
    ]
    assert state(node_dir, capsys) == before

    # --prune: raj disabled (never deleted), his session asked to end, history kept.
    code, out = bastion(node_dir, capsys, "apply", str(example), "--prune")
    assert code == 0, out
    assert "1 live session(s) of disabled users will be ended within a poll" in out
    users = {u["name"]: u for u in as_json(node_dir, capsys, "user", "list")}
    assert users["raj"]["state"] == "disabled" and users["raj"]["disabled"] is True
    assert "raj" in bastion(node_dir, capsys, "user", "list")[1]
    [raj_grant] = [g for g in as_json(node_dir, capsys, "grant", "list") if g["id"] == 2]
    assert raj_grant["state"] == "revoked" and raj_grant["revoked_by"].startswith("cli:")
    [row] = as_json(node_dir, capsys, "audit", "--action", "user.disable")
    assert row["subject"] == "raj" and row["details"]["sessions"] == ["s-raj"]
    assert row["details"]["reason"] == "not in the provisioning file"
    with store_of(node_dir) as store:
        session = store.get_session("s-raj")
        assert session is not None and session.user_name == "raj"
        assert store.termination_requests(["s-raj"])["s-raj"][1].startswith("user raj disabled")
    assert as_json(node_dir, capsys, "audit", "--action", "user.add")[-1]["subject"] == "raj"

    # And again: nothing left to do.
    code, out = bastion(node_dir, capsys, "apply", str(example), "--prune")
    assert code == 0 and out == "no changes\n"


def test_a_bad_file_is_one_line_naming_where(
    node_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[targets.db]\npostgres = 'h'\ndatabase = 'x'\ncredsets.ro = {user='u', password='pw'}\n"
    )
    code, out = bastion(node_dir, capsys, "apply", str(bad))
    assert code == 1
    assert out == (
        f"bastion: {bad}: targets.db.credsets.ro.password: a literal password is not allowed "
        "here (the file would hold a secret); write password = 'file:/path/to/secret' or "
        "'env:VARIABLE'\n"
    )


def test_json_output_and_changes_in_place(
    node_dir: Path, example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bastion(node_dir, capsys, "apply", str(example))[0] == 0
    [old] = [t for t in as_json(node_dir, capsys, "target", "list") if t["name"] == "web2"]
    text = example.read_text().replace('ssh = "10.0.0.6"', 'ssh = "10.0.0.7:2022"')
    text = text.replace('groups = ["web"]', 'groups = ["web", "db"]')
    text = text.replace(
        'labels = { env = "prod", role = "web" }', 'labels = { env = "staging", role = "web" }'
    )
    example.write_text(text)
    out = as_json(node_dir, capsys, "apply", str(example))
    assert [(c["sign"], c["subject"], c["details"]) for c in out["changes"]] == [
        ("~", "ann", ["groups web -> db,web"]),
        ("~", "web2", ["address 10.0.0.6:22 -> 10.0.0.7:2022", "label env prod -> staging"]),
    ]
    assert out["audit_rows"] == 3
    with store_of(node_dir) as store:  # the profile grant now reaches web2 too
        assert [t.name for t in store.targets_reached_by("staging-web")] == ["web1", "web2"]
    [row] = as_json(node_dir, capsys, "audit", "--action", "target.label")
    assert row["details"]["before"] == {"env": "prod", "role": "web"}
    [web2] = [t for t in as_json(node_dir, capsys, "target", "list") if t["name"] == "web2"]
    assert (web2["host"], web2["port"], web2["id"]) == ("10.0.0.7", 2022, old["id"])
    [row] = as_json(node_dir, capsys, "audit", "--action", "target.update")
    assert row["details"]["changes"] == ["address 10.0.0.6:22 -> 10.0.0.7:2022"]
    code, out_text = bastion(node_dir, capsys, "apply", str(example))
    assert out_text == "no changes\n"


def test_user_disable_takes_the_same_path_and_ends_live_sessions(
    node_dir: Path, example: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bastion(node_dir, capsys, "apply", str(example))[0] == 0
    with store_of(node_dir) as store:
        ann, web1 = store.get_user("ann"), store.get_target("web1")
        assert ann is not None and web1 is not None
        store.start_session(
            SessionRecord(
                id="s-ann", user_id=ann.id, user_name="ann", target_id=web1.id,
                target_name="web1", grant_id=1, node="n1", protocol="ssh", login="deploy",
                client_addr="127.0.0.1", started_at=time.time(),
            )
        )  # fmt: skip
    code, out = bastion(node_dir, capsys, "user", "disable", "ann")
    assert code == 0 and "1 live session(s) will be ended" in out
    [row] = as_json(node_dir, capsys, "audit", "--action", "user.disable")
    assert row["details"]["sessions"] == ["s-ann"] and row["details"]["via"] == "cli"
    with store_of(node_dir) as store:
        assert store.termination_requests(["s-ann"])["s-ann"][1] == "user ann disabled"
    # The file still names ann, enabled: applying it enables her again, audited.
    code, out = bastion(node_dir, capsys, "apply", str(example))
    assert out.startswith("~ user ann: enabled\n")
