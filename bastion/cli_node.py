"""``bastion init`` and ``bastion serve``: make a node's files, then run it."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import asyncssh
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion import audit_actions as actions
from bastion import event_loop
from bastion.ca import CertificateAuthority
from bastion.config import DEFAULT_CONFIG_NAME, Config, load_config, render_config
from bastion.errors import ConfigError
from bastion.secretbox import SecretBox
from bastion.ssh.algorithms import check_ssh_algorithms
from bastion.store import open_store

if TYPE_CHECKING:
    from bastion.service import BastionNode

log = logging.getLogger("bastion")


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_keys(config: Config) -> list[str]:
    """Create every key ``config`` names that does not exist yet; return what was made."""
    made: list[str] = []
    if not config.ssh.host_key.exists():
        key = asyncssh.generate_private_key("ssh-ed25519", comment=f"bastion {config.node}")
        _write_private(config.ssh.host_key, key.export_private_key("openssh"))
        config.ssh.host_key.with_name(config.ssh.host_key.name + ".pub").write_bytes(
            key.export_public_key("openssh")
        )
        made.append(f"SSH host key      {config.ssh.host_key}")
    pg = config.postgres
    if not pg.tls_cert.exists() and not pg.tls_key.exists():
        from bastion.pg.tls_cert import make_node_certificate

        ca = make_node_certificate(pg.tls_cert, pg.tls_key, pg.public_host or None)
        made.append(f"PostgreSQL TLS    {pg.tls_cert} (clients trust {ca})")
    if not config.ca_key.exists():
        CertificateAuthority.generate(config.ca_key)
        made.append(f"user CA key       {config.ca_key}")
    if not config.secret_key_file.exists() and not os.environ.get("BASTION_SECRET_KEY"):
        _write_private(config.secret_key_file, SecretBox.generate_key().hex().encode() + b"\n")
        made.append(f"secret key        {config.secret_key_file}")
    if not config.recording_signing_key.exists():
        sk = Ed25519PrivateKey.generate()
        _write_private(
            config.recording_signing_key,
            sk.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        pub = sk.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        config.recording_signing_key.with_name(
            config.recording_signing_key.name + ".pub"
        ).write_bytes(pub)
        made.append(f"recording key     {config.recording_signing_key}")
    config.recordings_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return made


def init_dir(directory: Path, listen: str, state_url: str | None, node: str | None) -> Config:
    """Write config, keys and an initialised state store into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cfg_path = directory / DEFAULT_CONFIG_NAME
    if not cfg_path.exists():
        text = render_config(node or socket.gethostname(), listen)
        if state_url:
            text = text.replace('url = "state.db"', f'url = "{state_url}"')
        cfg_path.write_text(text)
        os.chmod(cfg_path, 0o600)
    config = load_config(cfg_path)
    ensure_keys(config)
    box = SecretBox.from_env_or_file(config.secret_key_file)
    store = open_store(config.state_url, box)
    store.close()
    return config


def cmd_init(args: argparse.Namespace) -> int:
    """Create a bastion directory (idempotent: existing files are kept)."""
    directory = Path(args.dir).resolve()
    existed = (directory / DEFAULT_CONFIG_NAME).exists()
    config = init_dir(directory, args.listen, args.state_url, args.node)
    ca = CertificateAuthority.load(config.ca_key)
    print(("kept existing" if existed else "wrote") + f" {config.path}")
    print(f"state store: {config.state_url}")
    print()
    print("Targets trust certificates signed by this CA (TrustedUserCAKeys):")
    print(ca.public_key_line())
    print()
    print(
        "Next: bastion user add NAME --key KEY.pub; bastion target add ...; bastion grant add ...;"
    )
    print(f"then: bastion serve --config {config.path}")
    return 0


async def _catch_up(node: BastionNode) -> None:
    """Replay what the last run kept in its state outbox, then close what it left open."""
    from bastion.recording import recover_crashed_sessions

    if node.writer.pending:  # writes a previous run kept while the database was away
        done = await node.call(node.writer.replay)
        log.warning("state outbox: replayed %d write(s) left by the last run", done)
    recovered = await node.call(recover_crashed_sessions, node.recordings, node.store, node.node)
    if recovered:
        log.warning(
            "recovered %d session(s) left open by a crash: %s", len(recovered), ", ".join(recovered)
        )


async def _serve(config: Config, listen: str | None, reload_on_hup: bool = True) -> None:
    from bastion.service import BastionNode
    from bastion.session.drain import drain_sessions
    from bastion.ssh.server import start_ssh_listener

    node = BastionNode.from_config(config)
    await _catch_up(node)
    host = port = None
    if listen:
        host, _, p = listen.rpartition(":")
        port = int(p)
    server = await start_ssh_listener(node, host, port)
    pg_server = None
    if config.postgres.listen is not None:
        from bastion.pg.listener import start_pg_listener

        pg_server, _front = await start_pg_listener(node)
        for sock in pg_server.sockets:
            addr = sock.getsockname()
            print(f"bastion: PostgreSQL listening on {addr[0]}:{addr[1]}", flush=True)
    node.start_background()
    from bastion.control.server import start_control

    control = await start_control(node)
    from bastion.node_registry import FleetMembership

    stop, hurry = asyncio.Event(), asyncio.Event()
    # before "listening on" is printed: a stop signal right after it (a supervisor, a
    # test) must find the handlers, or the default SIGINT/SIGTERM ends the loop with
    # the node unclosed and its threads keep the process alive
    _install_signals(node, config, stop, hurry, reload_on_hup)
    fleet = FleetMembership(node, [server] + ([pg_server] if pg_server else []), stop)
    await fleet.join()
    metrics_server = None
    if config.metrics_listen is not None:
        from bastion.metrics import start_metrics_server

        def health() -> str | None:
            if (drain := fleet.problem()) is not None:
                return drain
            if not server.is_serving():
                return "the SSH listener is not serving"
            return node.state_problem() or node.recordings.storage_problem()

        metrics_server = await start_metrics_server(node.metrics, health, *config.metrics_listen)
        print(
            f"bastion: metrics on {config.metrics_listen[0]}:{config.metrics_listen[1]}", flush=True
        )
    for sock in server.sockets:
        addr = sock.getsockname()
        log.info("SSH listener on %s:%s (node %s)", addr[0], addr[1], node.node)
        print(f"bastion: listening on {addr[0]}:{addr[1]}", flush=True)
    await node.audit("node", actions.NODE_START, node.node)
    try:
        await stop.wait()
    finally:
        server.close()
        if pg_server is not None:
            pg_server.close()
        unsealed = await drain_sessions(node, node.config.stop_grace, hurry)
        if metrics_server is not None:
            metrics_server.close()
        await control.close()
        await node.audit("node", actions.NODE_STOP, node.node, unsealed=unsealed)
        await fleet.leave()
        await node.close()


def _install_signals(
    node: BastionNode, config: Config, stop: asyncio.Event, hurry: asyncio.Event, reload: bool
) -> None:
    """SIGTERM/SIGINT: a routine stop (a second one hurries it); SIGHUP: reload."""
    from bastion.node_reload import reload_node

    def on_stop_signal() -> None:
        if stop.is_set():
            log.warning("second stop signal: ending every session now")
            hurry.set()
        else:
            grace = node.config.stop_grace
            log.warning("stop signal: no new sessions; live ones end in %gs", grace)
            stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_stop_signal)
    if reload:  # the demo takes SIGHUP (its terminal closing) as a stop instead
        loop.add_signal_handler(
            signal.SIGHUP, lambda: node.spawn(reload_node(node, config.path, _set_log_level))
        )


def _set_log_level(level: str) -> None:
    """Apply a log level to the node's loggers (at start and on reload)."""
    logging.getLogger().setLevel(getattr(logging, level.upper(), logging.INFO))
    logging.getLogger("asyncssh").setLevel(
        logging.INFO if level.upper() == "DEBUG" else logging.WARNING
    )


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the node until SIGINT/SIGTERM (a routine stop: sessions told, ended, sealed).

    SIGHUP reloads what can change live (``bastion.node_reload``).
    """
    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(JsonLogFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(handlers=[handler])
    config = load_config(args.config)
    check_ssh_algorithms(config.ssh)  # before any worker forks or listener binds
    _set_log_level(config.log_level or str(args.log_level))
    if not config.ssh.host_key.exists():
        raise ConfigError(f"SSH host key {config.ssh.host_key} is missing; run 'bastion init'")
    if args.worker:
        from bastion.workers import worker_config

        if not 1 <= args.worker <= config.workers:
            raise ConfigError(f"--worker {args.worker} is outside 1..{config.workers}")
        config = worker_config(config, args.worker)
    elif config.workers > 1:
        from bastion.workers import Supervisor

        passed = ["--config", str(config.path), "--log-level", str(args.log_level)]
        passed += ["--log-format", args.log_format]
        passed += ["--listen", args.listen] if args.listen else []
        return Supervisor(config, passed).run()
    event_loop.run(_serve(config, args.listen), config.event_loop)
    return 0
