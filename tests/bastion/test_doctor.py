"""``bastion doctor`` on a real node directory made by ``bastion init``, with real modes (chmod)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bastion.cli import main
from bastion.cli_node import init_dir
from bastion.config import Config

LISTEN = "127.0.0.1:2222"


@pytest.fixture()
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    monkeypatch.delenv("BASTION_SECRET_KEY", raising=False)
    monkeypatch.delenv("BASTION_STATE_URL", raising=False)
    return init_dir(tmp_path / "node", LISTEN, None, "doc-node")


def doctor(
    config: Config, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, dict[str, str]]]:
    """Exit status and the findings by check name, read from ``--json``."""
    status = main(["doctor", "--config", str(config.path), "--json"])
    out = json.loads(capsys.readouterr().out)
    findings = {f["check"]: f for f in out["findings"]}
    assert out["unsafe"] == sum(f["status"] == "unsafe" for f in findings.values())
    return status, findings


def edit(config: Config, old: str, new: str) -> None:
    text = config.path.read_text()
    assert old in text
    config.path.write_text(text.replace(old, new))


def test_a_fresh_node_is_safe(node: Config, capsys: pytest.CaptureFixture[str]) -> None:
    status, findings = doctor(node, capsys)
    assert status == 0
    assert {f["status"] for f in findings.values()} == {"ok", "skipped"}
    for what in ("user CA key", "SSH host key", "secret-box key", "PostgreSQL TLS key"):
        assert findings[f"file: {what}"]["status"] == "ok"
    assert findings["tls: postgres"]["status"] == "ok"


@pytest.mark.parametrize(
    ("mode", "who"), [(0o640, "group"), (0o604, "others"), (0o666, "group and others")]
)
def test_a_key_others_can_read_is_unsafe_with_its_fix(
    node: Config, capsys: pytest.CaptureFixture[str], mode: int, who: str
) -> None:
    os.chmod(node.ca_key, mode)
    status, findings = doctor(node, capsys)
    assert status == 1
    ca = findings["file: user CA key"]
    assert ca["status"] == "unsafe"
    assert ca["message"] == f"{node.ca_key} has mode {mode:04o}: {who} can reach it"
    assert ca["fix"] == f"chmod 600 {node.ca_key}"
    os.chmod(node.ca_key, 0o600)
    status, findings = doctor(node, capsys)
    assert status == 0 and findings["file: user CA key"]["status"] == "ok"


def test_every_secret_file_is_checked(node: Config, capsys: pytest.CaptureFixture[str]) -> None:
    files = [
        node.ssh.host_key,
        node.secret_key_file,
        node.postgres.tls_key,
        node.recording_signing_key,
        node.path,
        Path(node.state_url.removeprefix("sqlite:///")),
    ]
    for path in files:
        os.chmod(path, 0o644)
    status, findings = doctor(node, capsys)
    assert status == 1
    unsafe = {f["fix"] for f in findings.values() if f["status"] == "unsafe"}
    assert unsafe == {f"chmod 600 {p}" for p in files}


def test_plain_text_lists_the_fix_under_the_finding(
    node: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(node.secret_key_file, 0o644)
    assert main(["doctor", "--config", str(node.path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    i = next(n for n, line in enumerate(lines) if line.startswith("UNSAFE   file: secret-box key"))
    assert lines[i + 1].strip() == f"fix: chmod 600 {node.secret_key_file}"
    assert lines[-1] == "1 unsafe finding(s)"


def test_postgres_without_tls_is_unsafe(node: Config, capsys: pytest.CaptureFixture[str]) -> None:
    edit(node, "require_tls = true", "require_tls = false")
    status, findings = doctor(node, capsys)
    assert status == 1
    pg = findings["tls: postgres"]
    assert pg["status"] == "unsafe" and "without TLS" in pg["message"]
    assert pg["fix"] == f"set require_tls = true in [postgres] of {node.path}"


def test_no_postgres_listener_skips_its_checks(
    node: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(node, 'listen = "0.0.0.0:6432"', 'listen = ""')
    edit(node, "require_tls = true", "require_tls = false")
    os.chmod(node.postgres.tls_key, 0o644)  # not used by this node
    status, findings = doctor(node, capsys)
    assert status == 0
    assert findings["tls: postgres"]["status"] == "skipped"
    assert "file: PostgreSQL TLS key" not in findings


def test_control_over_tcp_is_always_tls_and_its_key_is_checked(
    node: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    edit(node, '# listen = "0.0.0.0:7443"', 'listen = "127.0.0.1:7443"')
    status, findings = doctor(node, capsys)
    assert findings["tls: control"]["status"] == "ok"
    key = findings["file: control TLS key"]  # made by the node at its first start
    assert key["status"] == "missing" and key["fix"] == "run 'bastion init' to make it"
    assert status == 0  # missing is not unsafe: the node makes it


def test_a_secret_key_from_the_environment_needs_no_file(
    node: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_SECRET_KEY", node.secret_key_file.read_text().strip())
    node.secret_key_file.unlink()
    status, findings = doctor(node, capsys)
    assert status == 0 and "file: secret-box key" not in findings


def test_checks_this_bastion_cannot_make_say_why(
    node: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    _, findings = doctor(node, capsys)
    assert findings["ca: external signer"]["status"] == "skipped"
    assert "no external signer" in findings["ca: external signer"]["message"]


def test_an_unreadable_config_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--config", str(tmp_path / "none.toml")]) == 1
    assert "not found" in capsys.readouterr().err


def test_recordings_others_can_read_are_unsafe(
    node: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    os.chmod(node.recordings_dir, 0o755)  # noqa: S103  the unsafe mode under test
    status, findings = doctor(node, capsys)
    assert status == 1
    rec = findings["dir: recordings"]
    assert rec["status"] == "unsafe" and rec["fix"] == f"chmod 700 {node.recordings_dir}"


def test_a_key_folder_others_can_write_is_unsafe(
    node: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = node.ca_key.parent
    os.chmod(keys, 0o777)  # noqa: S103  the unsafe mode under test
    try:
        status, findings = doctor(node, capsys)
        assert status == 1
        folder = findings[f"dir: {keys}"]
        assert folder["status"] == "unsafe" and folder["fix"] == f"chmod go-w {keys}"
        os.chmod(keys, 0o1777)  # noqa: S103  sticky, like /tmp: nobody replaces our files
        status, findings = doctor(node, capsys)
        assert status == 0 and f"dir: {keys}" not in findings
    finally:
        os.chmod(keys, 0o700)


def test_several_workers_on_sqlite_are_unsafe(
    node: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    status, findings = doctor(node, capsys)
    assert findings["state: workers"]["status"] == "ok"  # "auto" is 1 on SQLite
    edit(node, 'workers = "auto"', "workers = 2")
    status, findings = doctor(node, capsys)
    assert status == 1 and findings["state: workers"]["status"] == "unsafe"
    assert "2 workers share one SQLite file" in findings["state: workers"]["message"]
    assert "set workers = 1 in [node]" in findings["state: workers"]["fix"]
