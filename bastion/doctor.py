"""``bastion doctor``: what in a node's set-up is unsafe, each finding with its fix.

The checks read the config and the files it names; they never start a listener
or open the state store, so doctor runs on a stopped node and on a node that
will not start. Each check gives a ``Finding``: ``ok``, ``unsafe`` (doctor exits
1), ``missing`` (a file the node will need) or ``skipped`` (the check does not
apply to this node, and the finding says why).
"""

from __future__ import annotations

import argparse
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from bastion.config import Config, load_config
from bastion.ssh.algorithms import check_ssh_algorithms

Status = Literal["ok", "unsafe", "missing", "skipped"]


@dataclass(frozen=True)
class Finding:
    """One check's verdict; ``fix`` says what to do when it is not ``ok``."""

    check: str
    status: Status
    message: str
    fix: str = ""

    def to_json(self) -> dict[str, str]:
        """The finding as a JSON object (``fix`` empty when there is nothing to do)."""
        return asdict(self)


def key_files(config: Config) -> list[tuple[str, Path]]:
    """Every file holding a private key or a secret, with what it is.

    The TLS key of the control listener counts only when that listener is on; the
    secret-box key file does not count when ``BASTION_SECRET_KEY`` replaces it.
    """
    files = [
        ("user CA key", config.ca_key),
        ("SSH host key", config.ssh.host_key),
        ("recording signing key", config.recording_signing_key),
        ("config file (may hold webhook secrets)", config.path),
    ]
    if config.state_url.startswith("sqlite:///"):
        files.append(
            (
                "SQLite state (audit trail, sealed secrets)",
                Path(config.state_url.removeprefix("sqlite:///")),
            )
        )
    if not (os.environ.get("BASTION_SECRET_KEY") and not config.secret_key_file.exists()):
        files.append(("secret-box key", config.secret_key_file))
    if config.postgres.listen is not None:
        files.append(("PostgreSQL TLS key", config.postgres.tls_key))
    if config.control.listen is not None:
        files.append(("control TLS key", config.control.tls_key))
    return files


def check_key_file(what: str, path: Path) -> Finding:
    """Unsafe if group or others may read or write ``path``, or it is not a regular file."""
    check = f"file: {what}"
    try:
        st = path.stat()
    except FileNotFoundError:
        return Finding(check, "missing", f"{path} does not exist", "run 'bastion init' to make it")
    except OSError as e:
        return Finding(check, "unsafe", f"{path} cannot be checked: {e.strerror}", "fix its path")
    if not stat.S_ISREG(st.st_mode):
        return Finding(check, "unsafe", f"{path} is not a regular file", "point the config at one")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if mode & bits)
        return Finding(
            check,
            "unsafe",
            f"{path} has mode {mode:04o}: {who} can reach it",
            f"chmod 600 {path}",
        )
    return Finding(check, "ok", f"{path} mode {mode:04o}")


def check_directories(config: Config, files: list[tuple[str, Path]]) -> list[Finding]:
    """Directories: recordings readable by others; key folders others may write into.

    A key file of mode 0600 in a folder others can write is not safe: the file can
    be replaced. Recordings hold what contractors typed and saw.
    """
    found: list[Finding] = []
    rec = config.recordings_dir
    try:
        mode = stat.S_IMODE(rec.stat().st_mode)
    except OSError:
        found.append(
            Finding("dir: recordings", "missing", f"{rec} does not exist", "run 'bastion init'")
        )
    else:
        if mode & 0o077:
            found.append(
                Finding(
                    "dir: recordings",
                    "unsafe",
                    f"{rec} has mode {mode:04o}: others can list or read recordings",
                    f"chmod 700 {rec}",
                )
            )
        else:
            found.append(Finding("dir: recordings", "ok", f"{rec} mode {mode:04o}"))
    for folder in sorted({path.parent for _, path in files}):
        try:
            mode = stat.S_IMODE(folder.stat().st_mode)
        except OSError:
            continue  # its files are reported missing
        if mode & 0o022 and not mode & stat.S_ISVTX:
            found.append(
                Finding(
                    f"dir: {folder}",
                    "unsafe",
                    f"{folder} has mode {mode:04o}: others can replace the key files in it",
                    f"chmod go-w {folder}",
                )
            )
    return found


def check_listeners(config: Config) -> list[Finding]:
    """TLS on every TCP listener that carries credentials."""
    found: list[Finding] = []
    pg = config.postgres
    if pg.listen is None:
        found.append(Finding("tls: postgres", "skipped", "no PostgreSQL listener"))
    elif not pg.require_tls:
        found.append(
            Finding(
                "tls: postgres",
                "unsafe",
                f"the PostgreSQL listener on {pg.listen[0]}:{pg.listen[1]} accepts logins "
                "without TLS (require_tls = false): database tokens cross the network in clear",
                f"set require_tls = true in [postgres] of {config.path}",
            )
        )
    else:
        found.append(Finding("tls: postgres", "ok", "the PostgreSQL listener requires TLS"))
    if config.control.listen is None:
        found.append(Finding("tls: control", "skipped", "no control listener on TCP"))
    else:
        host, port = config.control.listen
        found.append(
            Finding("tls: control", "ok", f"the control listener on {host}:{port} is always TLS")
        )
    return found


def check_workers(config: Config) -> Finding:
    """SQLite state shared by several workers: every write waits for one file lock."""
    if config.workers == 1:
        return Finding("state: workers", "ok", "one process serves this node")
    if config.state_url.startswith("sqlite:///"):
        return Finding(
            "state: workers",
            "unsafe",
            f"{config.workers} workers share one SQLite file: every login, audit row and "
            "session row waits for its single writer lock, and a busy node times out writes",
            f"set workers = 1 in [node] of {config.path}, or move the state to PostgreSQL "
            "([state] url)",
        )
    return Finding(
        "state: workers",
        "ok",
        f"{config.workers} workers share PostgreSQL state",
    )


def check_external_signer(config: Config) -> Finding:
    """The CA key on the node when an external signer holds it: no such feature yet."""
    del config
    return Finding(
        "ca: external signer",
        "skipped",
        "this bastion signs with the CA key file only (no external signer can be configured); "
        "the key file's mode is checked above",
    )


def diagnose(config: Config) -> list[Finding]:
    """Every check, in the order they are printed."""
    files = key_files(config)
    found = [check_key_file(what, path) for what, path in files]
    found += check_directories(config, files)
    found += check_listeners(config)
    found.append(check_workers(config))
    found.append(check_external_signer(config))
    return found


def render(findings: list[Finding]) -> str:
    """Plain text: one line per finding, the fix under each one that needs it."""
    lines = []
    for f in findings:
        lines.append(f"{f.status.upper():8} {f.check}: {f.message}")
        if f.fix and f.status in ("unsafe", "missing"):
            lines.append(f"{'':8} fix: {f.fix}")
    unsafe = sum(f.status == "unsafe" for f in findings)
    lines.append(f"{unsafe} unsafe finding(s)" if unsafe else "nothing unsafe found")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace) -> int:
    """Print every finding; exit 1 when one is unsafe."""
    config = load_config(args.config)
    # refused as 'bastion serve' refuses it: a node that will not start is no finding
    check_ssh_algorithms(config.ssh)
    findings = diagnose(config)
    if args.json:
        unsafe = sum(f.status == "unsafe" for f in findings)
        print(json.dumps({"unsafe": unsafe, "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        print(render(findings))
    return 1 if any(f.status == "unsafe" for f in findings) else 0
