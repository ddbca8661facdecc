"""``bastion demo``: a working bastion on this machine in one command.

It initialises a directory with embedded defaults, starts a throwaway OpenSSH
sshd as the demo target (trusting the bastion CA exactly as ``bastion target
setup`` says), creates user ``alice`` with a key pair and a TOTP secret, grants
her the target for eight hours, prints how to connect, and serves.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncssh

from bastion import audit_actions as actions
from bastion import event_loop
from bastion.admin_actions import Origin
from bastion.ca import CertificateAuthority
from bastion.cli_node import _serve, init_dir
from bastion.cli_shared import opened
from bastion.config import Config, load_config
from bastion.errors import NotFound
from bastion.mfa import code_for_step, provisioning_uri, qr_text, time_step
from bastion.openssh_target import OpenSSHTarget, free_port
from bastion.secretbox import SecretBox
from bastion.store import open_store
from bastion.store.models import Role, TargetKind
from bastion.target_setup import default_principal

DEMO_USER = "alice"
DEMO_TARGET = "demo"
DEMO_ADMIN = "admin"
DEMO_TARGET_PORT = 2200


def _user_key(directory: Path) -> tuple[Path, str]:
    path = directory / f"{DEMO_USER}_ed25519"
    if not path.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"{DEMO_USER}@demo")
        path.write_bytes(key.export_private_key("openssh"))
        os.chmod(path, 0o600)
        path.with_suffix(".pub").write_bytes(key.export_public_key("openssh"))
    return path, path.with_suffix(".pub").read_text().strip()


def _demo_pg_listener(config: Config) -> Config:
    """The demo's PostgreSQL listener on loopback: 6432 if free, else any free port."""
    text = config.path.read_text()
    if 'listen = "0.0.0.0:6432"' not in text:
        return config
    port = 6432
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            port = free_port()
    config.path.write_text(text.replace('listen = "0.0.0.0:6432"', f'listen = "127.0.0.1:{port}"'))
    return load_config(config.path)


_EXIT_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
"""Besides Ctrl-C (SIGINT, KeyboardInterrupt): ``kill`` and closing the terminal."""


def _exit_on_signal(signum: int, _frame: object) -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` stops the demo's sshd.

    Their default action ends the process on the spot, and the sshd child (which
    takes SIGHUP as "re-read the config") would outlive the demo."""
    raise SystemExit(128 + signum)


@contextmanager
def _sshd_never_outlives_us() -> Iterator[None]:
    """SIGTERM/SIGHUP end the demo through its ``finally``; restored afterwards."""
    previous = {sig: signal.signal(sig, _exit_on_signal) for sig in _EXIT_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _signals_ignored() -> Iterator[None]:
    """Let the clean-up finish even if the terminal closes or Ctrl-C comes again."""
    sigs = (signal.SIGINT, *_EXIT_SIGNALS)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


async def _serve_demo(config: Config) -> None:
    """``bastion serve``, with SIGHUP (the demo's terminal closing) taken as SIGTERM."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, signal.raise_signal, signal.SIGTERM)
    await _serve(config, None, reload_on_hup=False)


def cmd_demo(args: argparse.Namespace) -> int:
    """Set up (idempotently) and run the demo; its sshd stops on every way out."""
    with _sshd_never_outlives_us():
        return _run_demo(args)


def _run_demo(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    config = init_dir(directory, f"127.0.0.1:{args.port}", None, "demo")
    config = _demo_pg_listener(config)
    ca = CertificateAuthority.load(config.ca_key)
    login = getpass.getuser()
    target = OpenSSHTarget(
        directory / "target",
        ca.public_key_line(),
        default_principal(DEMO_TARGET),
        [login],
        port=DEMO_TARGET_PORT,
    )
    try:
        target.start()  # inside: a signal while it waits for sshd still stops sshd
        key_path, key_line = _user_key(directory)
        store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
        now = time.time()
        try:
            if store.get_target(DEMO_TARGET) is None:
                store.add_target(
                    name=DEMO_TARGET,
                    kind=TargetKind.SSH,
                    host=target.host,
                    port=target.port,
                    logins=[login],
                    principal=default_principal(DEMO_TARGET),
                    host_keys=[target.host_key_line],
                    now=now,
                )
            if store.get_user(DEMO_ADMIN) is None:  # for the console (bastion tui/watch)
                store.add_user(DEMO_ADMIN, Role.ADMIN, [], None, now)
            user = store.get_user(DEMO_USER)
            if user is None:
                from bastion.mfa import new_totp_secret

                user = store.add_user(
                    DEMO_USER, Role.CONTRACTOR, [key_line], new_totp_secret(), now
                )
            t = store.get_target(DEMO_TARGET)
            assert t is not None  # noqa: S101  added just above
            if not store.list_grants(user_id=user.id, target_id=t.id, active_at=now + 60):
                store.add_grant(
                    user_id=user.id,
                    target_id=t.id,
                    login=login,
                    credset=None,
                    not_before=now,
                    not_after=now + 8 * 3600,
                    reason="demo",
                    requested_by="demo",
                    approved_by="demo",
                    options=["scp", "sftp", "port-forward"],
                    now=now,
                )
            secret = user.totp_secret or ""
        finally:
            store.close()
        askpass = directory / "askpass"
        askpass.write_text(
            "#!/bin/sh\n# Prints alice's current TOTP code (demo only: a real user types it).\n"
            f"exec bastion totp-code --config '{config.path}' {DEMO_USER}\n"
        )
        os.chmod(askpass, 0o700)  # run by its owner's ssh only
        host = f"-p {args.port} -i {key_path}"
        pg_port = config.postgres.listen[1] if config.postgres.listen else 0
        print(qr_text(provisioning_uri(secret, DEMO_USER, config.mfa.issuer)))
        print(
            f"""\
Demo ready in {directory}
  target '{DEMO_TARGET}': OpenSSH sshd on 127.0.0.1:{target.port}, login '{login}'
  user '{DEMO_USER}': key {key_path}, TOTP secret {secret}
    (scan the QR code above, or let {askpass} answer the prompt)

Connect (the bastion asks for a TOTP code after the key):
  ssh {host} -t {DEMO_USER}@127.0.0.1                 # menu of grants
  ssh {host} -t {DEMO_USER}@127.0.0.1 {DEMO_TARGET}            # shell on the target
  ssh {host} {DEMO_USER}%{DEMO_TARGET}@127.0.0.1 uname -a      # target in the user name
  SSH_ASKPASS={askpass} SSH_ASKPASS_REQUIRE=force ssh {host} {DEMO_USER}%{DEMO_TARGET}@127.0.0.1 id
  scp -P {args.port} -i {key_path} README.md {DEMO_USER}%{DEMO_TARGET}@127.0.0.1:/tmp/

PostgreSQL listener: 127.0.0.1:{pg_port} (TLS). Add a database with
  bastion target add db1 --postgres HOST:5432 --database DB --credset rw:USER:env:PGPASS \\
      --config {config.path}
  bastion grant add {DEMO_USER} db1 --for 1h --config {config.path}
  then: ssh {host} {DEMO_USER}@127.0.0.1 db-token db1

Watch and replay sessions in the console (as the demo admin):
  bastion tui --config {config.path} --user {DEMO_ADMIN}
  bastion watch --config {config.path} --user {DEMO_ADMIN}

Every session is recorded under {config.recordings_dir}.
Admin: bastion sessions list --config {config.path}; bastion --help for the rest.
""",
            flush=True,
        )
        if args.setup_only:
            return 0
        loaded = load_config(config.path)
        event_loop.run(_serve_demo(loaded), loaded.event_loop)
    finally:
        with _signals_ignored():
            target.stop()
    return 0


def cmd_totp_code(args: argparse.Namespace) -> int:
    """Print the code a user's authenticator shows now (the next unused one, for repeated
    logins within 30 s). Needs the secret key: an admin-only aid for demos and scripts.

    It lets whoever runs it pass the user's second factor, so each use is audited
    (``user.totp-code``: the actor, the local uid and login, for whom) before the
    code is printed; no audit row, no code."""
    with opened(args) as (_config, store):
        user = store.get_user(args.name)
        if user is None or not user.totp_secret:
            raise NotFound(f"no user named '{args.name}' with a TOTP enrolment")
        now = time.time()
        step = time_step(now)
        if user.totp_last_step is not None and user.totp_last_step >= step:
            step = user.totp_last_step + 1
        origin = Origin.cli()
        store.append_audit(
            origin.actor, actions.USER_TOTP_CODE, user.name, {**origin.details, "step": step}, now
        )
        print(code_for_step(user.totp_secret, step))
    return 0
