"""The bastion's configuration: one TOML file with documented defaults.

Relative paths in the file are resolved against the file's own directory, so a
bastion directory made by ``bastion init`` can be moved as a whole. Every secret
can also come from an environment variable (named next to each setting).
"""

from __future__ import annotations

import difflib
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion.alerts.settings import CONFIG_TEMPLATE_SECTION as ALERTS_TEMPLATE
from bastion.alerts.settings import KNOWN_ALERT_KEYS, AlertsConfig, parse_alerts
from bastion.errors import ConfigError
from bastion.event_loop import LOOP_CHOICES, LoopChoice
from bastion.login_limits import CONFIG_TEMPLATE_SECTION as LOGIN_LIMITS_TEMPLATE
from bastion.login_limits import KNOWN_LOGIN_LIMITS_KEYS, LoginLimitsConfig, parse_login_limits
from bastion.networks import Network, trusted_networks
from bastion.notify.settings import SYSLOG_KEYS, WEBHOOK_KEYS, NotifyConfig, parse_notify
from bastion.policy_config import CONFIG_TEMPLATE_SECTION as POLICY_TEMPLATE
from bastion.policy_config import KNOWN_POLICY_KEYS, PolicyConfig, parse_policy
from bastion.requests_config import CONFIG_TEMPLATE_SECTION as REQUESTS_TEMPLATE
from bastion.requests_config import KNOWN_REQUEST_KEYS, RequestsConfig, parse_requests
from bastion.s3_config import S3Config, parse_storage
from bastion.ssh.algorithm_names import (
    ALGORITHM_KEYS,
    DEFAULT_CIPHERS,
    DEFAULT_HOST_KEY_ALGORITHMS,
    DEFAULT_MACS,
    default_kex_algorithms,
)
from bastion.users_config import CONFIG_TEMPLATE_SECTION as USERS_TEMPLATE
from bastion.users_config import KNOWN_USERS_KEYS, UsersConfig, parse_users

DEFAULT_CONFIG_NAME = "bastion.toml"


@dataclass(frozen=True)
class SshConfig:
    """The contractor-facing SSH listener and the upstream client."""

    listen_host: str = "0.0.0.0"  # noqa: S104  documented default
    listen_port: int = 2222
    host_key: Path = Path("keys/ssh_host_ed25519_key")
    login_timeout: float = 30.0
    idle_timeout: float = 900.0
    certificate_lifetime: float = 120.0
    certificate_backdate: float = 30.0
    source_addresses: tuple[str, ...] = ()
    connect_timeout: float = 10.0
    max_startups: int = 100
    per_source_max_startups: int = 10
    """Logins in progress from one address (IPv4) or /64 (IPv6); 0: no per-source cap."""
    ciphers: tuple[str, ...] = DEFAULT_CIPHERS
    """Ciphers offered to contractors. chacha20-poly1305 is left out by default: in
    asyncssh it costs about 40 % of relay throughput (new cipher objects per packet)."""
    kex_algorithms: tuple[str, ...] = field(default_factory=default_kex_algorithms)
    """Key exchanges offered: no SHA-1, no group exchange (see bastion.ssh.algorithms).
    The default is cut to what the installed asyncssh implements, so it is computed
    (importing asyncssh) only when the config file leaves the key out."""
    macs: tuple[str, ...] = DEFAULT_MACS
    host_key_algorithms: tuple[str, ...] = DEFAULT_HOST_KEY_ALGORITHMS
    proxy_protocol: bool = False
    """Every connection starts with a PROXY v1/v2 header from one of ``trusted_proxies``."""
    trusted_proxies: tuple[Network, ...] = ()

    max_channels_per_connection: int = 10
    """Channels (sessions and -L forwards) open at once on one connection; more are
    refused at channel open. 0: no cap."""
    channel_window: int = 2 * 1024 * 1024
    """Bytes the node lets a peer send on one channel before it must wait (asyncssh's
    window, advertised on both legs): what a paused channel can hold."""
    stalled_reader_timeout: float = 300.0
    """Seconds a session may stay paused because its client does not read; then it ends
    as ``resource-limit``. 0: stay paused."""


@dataclass(frozen=True)
class PostgresConfig:
    """The contractor-facing PostgreSQL listener, its TLS, tokens and query capture."""

    listen: tuple[str, int] | None = ("0.0.0.0", 6432)  # noqa: S104  documented default
    """None: no PostgreSQL listener on this node."""
    public_host: str = ""
    """Host name printed in ``db-token`` connection strings (default: this node's FQDN)."""
    tls_cert: Path = Path("keys/pg_tls.crt")
    tls_key: Path = Path("keys/pg_tls.key")
    require_tls: bool = True
    token_ttl: float = 3600.0
    login_timeout: float = 30.0
    connect_timeout: float = 10.0
    max_startups: int = 100
    per_source_max_startups: int = 10
    """Logins in progress from one address (IPv4) or /64 (IPv6); 0: no per-source cap."""
    max_message_bytes: int = 64 * 1024 * 1024
    stalled_reader_timeout: float = 300.0
    """Seconds a session may stay paused because its client does not read results; then
    it ends as ``resource-limit``. 0: stay paused."""
    capture_rows: int = 0
    """Result rows kept per statement in the recording (0: none, the default)."""
    mask_columns: tuple[str, ...] = ("*password*", "*secret*", "*token*")
    """Column-name patterns whose captured values are replaced by ``***`` (matched
    against the column a value comes from, through aliases, expressions and views)."""
    mask_patterns: tuple[str, ...] = ()
    """Regexes: a captured value matching any is replaced by ``***`` whatever its column."""
    proxy_protocol: bool = False
    """Every connection starts with a PROXY v1/v2 header from one of ``trusted_proxies``."""
    trusted_proxies: tuple[Network, ...] = ()


@dataclass(frozen=True)
class ControlConfig:
    """The control API for admins and auditors (the TUI, ``bastion control``)."""

    socket: Path | None = Path("control.sock")
    """Unix socket (mode 0660; root or the node's uid); None: no socket."""
    listen: tuple[str, int] | None = None
    """TCP + TLS listener for remote admins (control token required); None: off."""
    tls_cert: Path = Path("keys/control_tls.crt")
    tls_key: Path = Path("keys/control_tls.key")


@dataclass(frozen=True)
class MfaConfig:
    """TOTP parameters and the lockout policy."""

    issuer: str = "bastion"
    max_failures: int = 5
    failure_window: float = 600.0
    lockout: float = 900.0
    valid_window: int = 1


@dataclass(frozen=True)
class TimeboxConfig:
    """When live sessions are warned about their grant's end, and how often grants are polled."""

    warn_before: tuple[float, ...] = (300.0, 60.0)
    poll_interval: float = 0.5


@dataclass(frozen=True)
class Config:
    """Everything ``bastion serve`` and the CLI need, with paths made absolute."""

    path: Path
    node: str
    state_url: str
    secret_key_file: Path
    ca_key: Path
    recordings_dir: Path
    recording_signing_key: Path
    recording_on_failure: str = "refuse"
    recording_repack_level: int = 9
    recording_min_free_bytes: int = 64 * 1024 * 1024
    """``[recording] min_free_bytes``: below this much free space no session is recorded."""
    recording_s3: S3Config | None = None
    """``[recording] storage = "s3://..."``: sealed recordings are uploaded (dir: the spool)."""
    event_loop: LoopChoice = "auto"
    stop_grace: float = 5.0
    """Seconds live sessions get after SIGTERM before they end with reason node-stop."""
    log_level: str | None = None
    """``[node] log_level``: overrides ``serve --log-level`` and follows SIGHUP reloads."""
    metrics_listen: tuple[str, int] | None = None
    workers: int = 1
    """``[node] workers`` resolved: how many processes serve this node's ports."""
    worker: int = 0
    """Which worker this process is (1..workers), or 0 for a single-process node."""
    ssh: SshConfig = field(default_factory=SshConfig)
    postgres: PostgresConfig = field(default_factory=PostgresConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    mfa: MfaConfig = field(default_factory=MfaConfig)
    timebox: TimeboxConfig = field(default_factory=TimeboxConfig)
    requests: RequestsConfig = field(default_factory=RequestsConfig)
    users: UsersConfig = field(default_factory=UsersConfig)
    """``[users]``: whether a contractor needs an end date."""
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    """``[[notify.webhook]]`` and ``[[notify.syslog]]`` sinks (none by default)."""
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    """``[policy]``: the guardrails' default action and hold timeout."""
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    state_outage_grace: float = 60.0
    """``[state] outage_grace``: seconds live sessions go on while the state database is away."""
    state_outbox: Path = Path("state-outbox.db")
    """``[state] outbox``: the local journal of writes made while the database is away."""

    login_limits: LoginLimitsConfig = field(default_factory=LoginLimitsConfig)
    """``[login_limits]``: per-address failure blocks and per-source penalties."""

    @property
    def base_dir(self) -> Path:
        """The directory the config file lives in."""
        return self.path.parent

    @property
    def outbox_path(self) -> Path:
        """``state_outbox``, relative paths taken from the config's directory."""
        return (
            self.state_outbox
            if self.state_outbox.is_absolute()
            else (self.base_dir / self.state_outbox)
        )


KNOWN_KEYS: dict[str, frozenset[str]] = {
    "node": frozenset({"name", "event_loop", "stop_grace", "log_level", "workers"}),
    "state": frozenset({"url", "secret_key_file", "outage_grace", "outbox"}),
    "ca": frozenset({"key"}),
    "recording": frozenset(
        {"dir", "signing_key", "on_failure", "repack_level", "min_free_bytes", "storage", "s3"}
    ),
    "ssh": frozenset(
        {
            "listen",
            "host_key",
            "login_timeout",
            "login_grace",
            "max_startups",
            "per_source_max_startups",
            "idle_timeout",
            "certificate_lifetime",
            "certificate_backdate",
            "source_addresses",
            "connect_timeout",
            "ciphers",
            "kex_algorithms",
            "macs",
            "host_key_algorithms",
            "proxy_protocol",
            "trusted_proxies",
            "max_channels_per_connection",
            "channel_window",
            "stalled_reader_timeout",
        }
    ),
    "postgres": frozenset(
        {
            "listen",
            "public_host",
            "tls_cert",
            "tls_key",
            "require_tls",
            "token_ttl",
            "login_timeout",
            "login_grace",
            "connect_timeout",
            "max_startups",
            "per_source_max_startups",
            "max_message_bytes",
            "stalled_reader_timeout",
            "capture_rows",
            "mask_columns",
            "mask_patterns",
            "proxy_protocol",
            "trusted_proxies",
        }
    ),
    "control": frozenset({"socket", "listen", "tls_cert", "tls_key"}),
    "mfa": frozenset({"issuer", "max_failures", "failure_window", "lockout", "valid_window"}),
    "metrics": frozenset({"listen"}),
    "timebox": frozenset({"warn_before", "poll_interval"}),
    "requests": KNOWN_REQUEST_KEYS,
    "users": KNOWN_USERS_KEYS,
    "login_limits": KNOWN_LOGIN_LIMITS_KEYS,
    "notify": frozenset({"webhook", "syslog"}),
    "policy": KNOWN_POLICY_KEYS,
    "alerts": KNOWN_ALERT_KEYS,
}
"""Every section and key the loader reads. Anything else in the file is an error: a
mistyped security setting (``idle_timout``) must not silently fall back to its default."""

KNOWN_ARRAY_KEYS: dict[tuple[str, str], frozenset[str]] = {
    ("notify", "webhook"): WEBHOOK_KEYS,
    ("notify", "syslog"): SYSLOG_KEYS,
}
"""Keys of the arrays of tables (``[[notify.webhook]]``): each entry is checked like a section."""


def _nearest(word: str, choices: frozenset[str]) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_known_keys(data: dict[str, Any], path: Path) -> None:
    """Raise ConfigError naming the first unknown section or key and the nearest valid one."""
    for section, table in data.items():
        known = KNOWN_KEYS.get(section)
        if known is None:
            raise ConfigError(
                f"{path}: unknown section [{section}]{_nearest(section, frozenset(KNOWN_KEYS))}"
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[{section}] must be a table in the config file")
        for key in table:
            if key not in known:
                raise ConfigError(f"{path}: unknown key [{section}] {key}{_nearest(key, known)}")
            if (section, key) in KNOWN_ARRAY_KEYS:
                _check_array(table[key], f"{section}.{key}", KNOWN_ARRAY_KEYS[section, key], path)


def _check_array(value: object, name: str, known: frozenset[str], path: Path) -> None:
    """Each table of ``[[name]]`` holds only ``known`` keys."""
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{path}: [{name}] must be an array of tables: write [[{name}]]")
    for entry in value:
        for key in entry:
            if key not in known:
                raise ConfigError(f"{path}: unknown key [[{name}]] {key}{_nearest(key, known)}")


def _loop_choice(value: object) -> LoopChoice:
    for choice in LOOP_CHOICES:
        if value == choice:
            return choice
    raise ConfigError(f"node.event_loop must be one of {', '.join(LOOP_CHOICES)}, not {value!r}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise ConfigError(f"node.log_level must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return value.upper()


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table in the config file")
    return value


def _path(base: Path, value: object, setting: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{setting} must be a non-empty path string")
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _listen(value: object, setting: str = "ssh.listen") -> tuple[str, int]:
    if not isinstance(value, str) or ":" not in value:
        raise ConfigError(f"{setting} must look like 'HOST:PORT', got {value!r}")
    host, _, port = value.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError as e:
        raise ConfigError(f"{setting} port must be a number, got {port!r}") from e


def _min_free(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(
            f"recording.min_free_bytes must be a whole number of bytes >= 0, not {value!r} "
            "(e.g. 67108864 for 64 MiB)"
        )
    return value


def _login_grace(section: dict[str, Any], name: str) -> float:
    """``login_grace`` (OpenSSH's LoginGraceTime), or its older name ``login_timeout``."""
    if "login_grace" in section and "login_timeout" in section:
        raise ConfigError(
            f"{name}.login_grace and {name}.login_timeout are the same setting; keep login_grace"
        )
    key = "login_grace" if "login_grace" in section else "login_timeout"
    return _number(section, key, 30, f"{name}.{key}")


def _window(ssh: dict[str, Any]) -> int:
    """``[ssh] channel_window``: a whole number of bytes, at least one packet (32 KiB)."""
    window = int(_number(ssh, "channel_window", 2 * 1024 * 1024, "ssh.channel_window"))
    if window < 32768:
        raise ConfigError(
            f"ssh.channel_window = {window} is below one SSH packet (32768 bytes); "
            "raise it (the default is 2097152)"
        )
    return window


def _number(section: dict[str, Any], key: str, default: float, setting: str) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{setting} must be a non-negative number, got {value!r}")
    if value == float("inf"):  # NaN fails the test above; neither is a count or a time
        raise ConfigError(f"{setting} must be a finite number, got {value!r}")
    return float(value)


def _workers(value: object, state_url: str) -> int:
    """``[node] workers``: a count, or "auto" (one per core on PostgreSQL state, 1 on SQLite)."""
    if value == "auto":
        if state_url.startswith(("postgresql://", "postgres://")):
            return max(1, os.cpu_count() or 1)
        return 1
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ConfigError(
            f'node.workers must be "auto" or a whole number from 1 to 256, not {value!r}'
        )
    return value


def _on_failure(value: object) -> str:
    if value not in ("refuse", "continue"):
        raise ConfigError(f'recording.on_failure must be "refuse" or "continue", got {value!r}')
    return str(value)


def _strings(
    section: dict[str, Any], key: str, default: tuple[str, ...], setting: str
) -> tuple[str, ...]:
    value = section.get(key, list(default))
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{setting} must be a list of strings")
    return tuple(value)


def _algorithms(ssh: dict[str, Any]) -> dict[str, Any]:
    """The ``[ssh]`` algorithm lists the file sets (the others keep SshConfig's defaults).

    Only the shape is checked here: whether this node's asyncssh implements each name
    is ``bastion.ssh.algorithms.check_ssh_algorithms``, run where SSH is used (``bastion
    serve``, the listener, a reload, ``bastion doctor``), so that commands which never
    speak SSH do not import asyncssh.
    """
    lists: dict[str, Any] = {}
    for key in ALGORITHM_KEYS:
        if key in ssh:
            lists[key] = _strings(ssh, key, (), f"ssh.{key}")
            if not lists[key]:
                raise ConfigError(
                    f"ssh.{key} must not be empty; remove the key to get the defaults"
                )
    return lists


def _postgres(pg: dict[str, Any], base: Path) -> PostgresConfig:
    listen = pg.get("listen", "0.0.0.0:6432")
    require_tls = pg.get("require_tls", True)
    if not isinstance(require_tls, bool):
        raise ConfigError("postgres.require_tls must be true or false")
    public_host = pg.get("public_host", "")
    if not isinstance(public_host, str):
        raise ConfigError("postgres.public_host must be a host name string")
    return PostgresConfig(
        listen=_listen(listen, "postgres.listen") if listen else None,
        public_host=public_host,
        tls_cert=_path(base, pg.get("tls_cert", "keys/pg_tls.crt"), "postgres.tls_cert"),
        tls_key=_path(base, pg.get("tls_key", "keys/pg_tls.key"), "postgres.tls_key"),
        require_tls=require_tls,
        token_ttl=_number(pg, "token_ttl", 3600, "postgres.token_ttl"),
        login_timeout=_login_grace(pg, "postgres"),
        connect_timeout=_number(pg, "connect_timeout", 10, "postgres.connect_timeout"),
        max_startups=int(_number(pg, "max_startups", 100, "postgres.max_startups")),
        per_source_max_startups=int(
            _number(pg, "per_source_max_startups", 10, "postgres.per_source_max_startups")
        ),
        stalled_reader_timeout=_number(
            pg, "stalled_reader_timeout", 300, "postgres.stalled_reader_timeout"
        ),
        max_message_bytes=int(
            _number(pg, "max_message_bytes", 64 * 1024 * 1024, "postgres.max_message_bytes")
        ),
        capture_rows=int(_number(pg, "capture_rows", 0, "postgres.capture_rows")),
        mask_columns=_strings(
            pg, "mask_columns", PostgresConfig.mask_columns, "postgres.mask_columns"
        ),
        mask_patterns=_regexes(pg, "mask_patterns", "postgres.mask_patterns"),
        **_proxy_settings(pg, "postgres"),
    )


def _proxy_settings(section: dict[str, Any], name: str) -> dict[str, Any]:
    """``proxy_protocol`` and ``trusted_proxies`` of ``[ssh]`` or ``[postgres]``."""
    on = section.get("proxy_protocol", False)
    if not isinstance(on, bool):
        raise ConfigError(f"{name}.proxy_protocol must be true or false")
    trusted = trusted_networks(
        _strings(section, "trusted_proxies", (), f"{name}.trusted_proxies"),
        f"{name}.trusted_proxies",
    )
    if on and not trusted:
        raise ConfigError(
            f"{name}.proxy_protocol is on but {name}.trusted_proxies is empty: list the "
            'load balancers\' addresses (e.g. trusted_proxies = ["10.0.0.5/32"])'
        )
    return {"proxy_protocol": on, "trusted_proxies": trusted}


def _regexes(section: dict[str, Any], key: str, setting: str) -> tuple[str, ...]:
    """A list of regexes, each compiled now so a typo fails at load, not in a session."""
    patterns = _strings(section, key, (), setting)
    for i, pattern in enumerate(patterns):
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(
                f"{setting}[{i}] is not a valid regular expression ({e}): {pattern!r}; "
                "use Python re syntax, e.g. '\\bAKIA[0-9A-Z]{{16}}\\b'"
            ) from e
    return patterns


def _control(section: dict[str, Any], base: Path) -> ControlConfig:
    sock = section.get("socket", "control.sock")
    listen = section.get("listen", "")
    return ControlConfig(
        socket=_path(base, sock, "control.socket") if sock else None,
        listen=_listen(listen, "control.listen") if listen else None,
        tls_cert=_path(base, section.get("tls_cert", "keys/control_tls.crt"), "control.tls_cert"),
        tls_key=_path(base, section.get("tls_key", "keys/control_tls.key"), "control.tls_key"),
    )


def load_config(path: Path | str | None = None) -> Config:
    """Read the config file (default: $BASTION_CONFIG or ./bastion.toml); raises ConfigError."""
    if path is None:
        path = os.environ.get("BASTION_CONFIG", DEFAULT_CONFIG_NAME)
    path = Path(path).expanduser().resolve()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(
            f"config file {path} not found; create one with 'bastion init' or pass --config"
        ) from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    _check_known_keys(data, path)
    base = path.parent

    node = _section(data, "node")
    state = _section(data, "state")
    ca = _section(data, "ca")
    rec = _section(data, "recording")
    ssh = _section(data, "ssh")
    mfa = _section(data, "mfa")
    tb = _section(data, "timebox")
    pg = _section(data, "postgres")

    state_url = os.environ.get("BASTION_STATE_URL") or state.get("url", "state.db")
    if not isinstance(state_url, str):
        raise ConfigError("state.url must be a string")
    if "://" not in state_url:
        state_url = "sqlite:///" + str(_path(base, state_url, "state.url"))

    host, port = _listen(ssh.get("listen", "0.0.0.0:2222"))
    sources = ssh.get("source_addresses", [])
    if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
        raise ConfigError("ssh.source_addresses must be a list of address strings")
    warn = tb.get("warn_before", [300, 60])
    if not isinstance(warn, list) or not all(isinstance(w, int | float) for w in warn):
        raise ConfigError("timebox.warn_before must be a list of seconds, e.g. [300, 60]")

    return Config(
        path=path,
        node=str(node.get("name") or socket.gethostname()),
        event_loop=_loop_choice(node.get("event_loop", "auto")),
        stop_grace=_number(node, "stop_grace", 5, "node.stop_grace"),
        workers=_workers(node.get("workers", "auto"), state_url),
        log_level=_log_level(node.get("log_level")),
        state_url=state_url,
        secret_key_file=_path(
            base, state.get("secret_key_file", "keys/secret.key"), "state.secret_key_file"
        ),
        state_outage_grace=_number(state, "outage_grace", 60, "state.outage_grace"),
        state_outbox=_path(base, state.get("outbox", "state-outbox.db"), "state.outbox"),
        ca_key=_path(base, ca.get("key", "keys/user_ca"), "ca.key"),
        recordings_dir=_path(base, rec.get("dir", "recordings"), "recording.dir"),
        recording_signing_key=_path(
            base, rec.get("signing_key", "keys/recording_signing_key"), "recording.signing_key"
        ),
        recording_on_failure=_on_failure(rec.get("on_failure", "refuse")),
        recording_repack_level=int(_number(rec, "repack_level", 9, "recording.repack_level")),
        recording_min_free_bytes=_min_free(rec.get("min_free_bytes", 64 * 1024 * 1024)),
        recording_s3=parse_storage(rec),
        metrics_listen=(
            _listen(_section(data, "metrics")["listen"], "metrics.listen")
            if _section(data, "metrics").get("listen")
            else None
        ),
        ssh=SshConfig(
            listen_host=host,
            listen_port=port,
            host_key=_path(base, ssh.get("host_key", "keys/ssh_host_ed25519_key"), "ssh.host_key"),
            login_timeout=_login_grace(ssh, "ssh"),
            idle_timeout=_number(ssh, "idle_timeout", 900, "ssh.idle_timeout"),
            certificate_lifetime=min(
                _number(ssh, "certificate_lifetime", 120, "ssh.certificate_lifetime"), 120.0
            ),
            certificate_backdate=_number(
                ssh, "certificate_backdate", 30, "ssh.certificate_backdate"
            ),
            source_addresses=tuple(sources),
            connect_timeout=_number(ssh, "connect_timeout", 10, "ssh.connect_timeout"),
            max_startups=int(_number(ssh, "max_startups", 100, "ssh.max_startups")),
            per_source_max_startups=int(
                _number(ssh, "per_source_max_startups", 10, "ssh.per_source_max_startups")
            ),
            **_algorithms(ssh),
            **_proxy_settings(ssh, "ssh"),
            max_channels_per_connection=int(
                _number(ssh, "max_channels_per_connection", 10, "ssh.max_channels_per_connection")
            ),
            channel_window=_window(ssh),
            stalled_reader_timeout=_number(
                ssh, "stalled_reader_timeout", 300, "ssh.stalled_reader_timeout"
            ),
        ),
        postgres=_postgres(pg, base),
        control=_control(_section(data, "control"), base),
        mfa=MfaConfig(
            issuer=str(mfa.get("issuer", "bastion")),
            max_failures=int(_number(mfa, "max_failures", 5, "mfa.max_failures")),
            failure_window=_number(mfa, "failure_window", 600, "mfa.failure_window"),
            lockout=_number(mfa, "lockout", 900, "mfa.lockout"),
            valid_window=int(_number(mfa, "valid_window", 1, "mfa.valid_window")),
        ),
        timebox=TimeboxConfig(
            warn_before=tuple(sorted((float(w) for w in warn), reverse=True)),
            poll_interval=_number(tb, "poll_interval", 0.5, "timebox.poll_interval"),
        ),
        requests=parse_requests(_section(data, "requests")),
        users=parse_users(_section(data, "users")),
        notify=parse_notify(_section(data, "notify"), base),
        policy=parse_policy(_section(data, "policy")),
        alerts=parse_alerts(_section(data, "alerts")),
        login_limits=parse_login_limits(_section(data, "login_limits")),
    )


CONFIG_TEMPLATE = (
    """\
# bastion configuration. Relative paths are relative to this file's directory.
# Every setting shown has its default value.

[node]
# Name of this node in session records and audit rows (default: the host name).
name = "{node}"
# The event loop: "auto" (uvloop when installed, else asyncio's own), "uvloop"
# (refuse to start without it) or "asyncio". uvloop makes the relays cheaper.
event_loop = "auto"
# Seconds live sessions get after SIGTERM (systemctl stop) before they end with
# reason node-stop; every recording is sealed either way. A second SIGTERM ends
# them at once.
stop_grace = 5
# Log level (DEBUG, INFO, WARNING, ERROR); overrides serve --log-level and
# follows a reload (SIGHUP). Unset: the command line decides.
# log_level = "INFO"
# Processes serving this node's ports (SO_REUSEPORT), each a worker named
# NAME/w1, NAME/w2, ... with its own control socket (control.w2.sock, ...) and
# metrics/control TCP ports (the configured port + worker - 1). A worker that
# dies is restarted; the others' sessions go on. "auto": one per core on
# PostgreSQL state, 1 on SQLite (one writer at a time; bastion doctor warns).
workers = "auto"

[state]
# Where users, targets, grants, sessions and the audit log live.
# A path means SQLite (the embedded default); "postgresql://user@host/db" uses
# PostgreSQL so several stateless nodes can share state. Env: BASTION_STATE_URL.
url = "state.db"
# 32-byte key (hex) that encrypts TOTP seeds and database credentials at rest.
# Keep it out of the state store's backups. Env: BASTION_SECRET_KEY (hex).
secret_key_file = "keys/secret.key"
# While the state database is unreachable, new logins are refused and live
# sessions go on (recorded) for this many seconds, since revocations can no
# longer be seen; then they end as state-unavailable. 0: end them at once.
outage_grace = 60
# The node's own writes made meanwhile (session rows, counts, audit events) wait
# in this local journal and reach the database, in order, when it returns.
outbox = "state-outbox.db"

[ca]
# The user certificate authority that signs short-lived upstream certificates.
# Targets trust its public key (keys/user_ca.pub) with TrustedUserCAKeys.
key = "keys/user_ca"

[recording]
# Where session recordings are written, and the Ed25519 key that signs them.
dir = "recordings"
signing_key = "keys/recording_signing_key"
# What happens when a recording cannot be written (disk full, permissions):
# "refuse" (default) refuses new sessions and ends live ones. "continue" lets
# sessions run UNRECORDED (audited loudly): only for labs, never for production.
on_failure = "refuse"
# When a session ends its recording is rewritten into large chunks (re-verified,
# re-signed, replaced atomically): live chunks are small for crash safety and
# compress poorly. zstd level for that rewrite (1-22; 19 is smallest and slowest);
# 0 turns repacking off.
repack_level = 9
# Free space the recording storage keeps in reserve (bytes). Below it new sessions
# are refused, live ones end as "recording-failed" with their recordings sealed
# into the reserve, and /healthz answers 503; all of it undoes itself once space
# returns. Give it at least 512 KiB per concurrent session; 0 turns the check off
# (a full disk then still ends sessions, but their last second is not sealed).
min_free_bytes = 67108864
# "local" keeps recordings in dir. "s3://bucket/prefix" makes dir a spool: each
# recording is written there as always and uploaded once sealed (then removed
# from the spool). Set endpoint_url for MinIO / Ceph RGW and region under
# [recording.s3]; credentials come from the environment, a profile or an
# instance role, never from this file. For example:
#   storage = "s3://audit-recordings/bastion"
#   [recording.s3]
#   endpoint_url = "https://minio.internal:9000"   # leave out for AWS S3
#   region = "eu-west-1"
storage = "local"

[ssh]
# Contractor-facing listener.
listen = "{listen}"
host_key = "keys/ssh_host_ed25519_key"
# Seconds a client may take to authenticate before it is disconnected (OpenSSH's
# LoginGraceTime; the older name login_timeout is still read), and how many
# connections may be authenticating at once (more are dropped at once, like
# OpenSSH's MaxStartups): slow or idle clients cannot starve real users.
# Unauthenticated connections never get a session row or a recording.
login_grace = 30
max_startups = 100
# Of those, how many may come from one source (an IPv4 address or an IPv6 /64),
# like OpenSSH's PerSourceMaxStartups: one address cannot fill max_startups and
# lock everyone else out. 0 = no per-source cap.
per_source_max_startups = 10
# Seconds without input before a session is closed (0 = never).
idle_timeout = 900
# Resource caps of one connection (README "Limits"): channels (sessions and -L
# forwards) open at once, more refused at channel open (0 = no cap); the bytes a
# peer may send on one channel before it must wait (the SSH window, both legs:
# what a paused channel holds); seconds a session may stay paused because the
# client does not read its output before it ends as resource-limit (0 = stay
# paused).
max_channels_per_connection = 10
channel_window = 2097152
stalled_reader_timeout = 300
# Upstream certificates: lifetime (at most 120 s; never past the grant's end)
# and how far back valid-after is set to absorb clock skew (inside the lifetime).
certificate_lifetime = 120
certificate_backdate = 30
# Addresses put in each certificate's source-address. Empty: the address this
# node uses to reach the target (found per connection).
source_addresses = []
connect_timeout = 10
# Algorithms offered to contractors' clients (the client picks the first of its
# own list that is offered). Names are checked against what this node's asyncssh
# implements; an unknown one is an error that lists the choices.
# Ciphers: chacha20-poly1305@openssh.com works too but relays about 40 % slower
# in asyncssh; add it only for clients that have nothing else.
ciphers = {ciphers}
# Key exchange: no SHA-1, no small or negotiated (group-exchange) DH groups, no
# NIST curves; post-quantum hybrids first where this asyncssh implements them
# (sntrup761x25519 needs liboqs). The two large fixed DH groups are for clients
# without X25519 (OpenSSH in FIPS mode).
kex_algorithms = {kex_algorithms}
# MACs: encrypt-then-MAC only (the AES-GCM ciphers need none).
macs = {macs}
# Signatures the host key may make: no ssh-rsa (SHA-1), no NIST curves. Only
# those the host_key file can make are offered (an Ed25519 key: ssh-ed25519).
host_key_algorithms = {host_key_algorithms}
# Behind a TCP load balancer that sends the PROXY protocol (HAProxy's send-proxy
# or send-proxy-v2): every connection must then come from one of trusted_proxies
# (addresses or CIDR blocks) and start with a v1 or v2 header, read within
# login_timeout; the address in it is the client's everywhere (audit, session
# rows, per-source limits). Anything else is closed and logged.
proxy_protocol = false
trusted_proxies = []

[postgres]
# Contractor-facing PostgreSQL listener (empty: none). Clients log in with
# user = their bastion name, dbname = TARGET or TARGET/CREDSET, and a database
# token from 'ssh -p 2222 USER@bastion db-token TARGET' as the password.
listen = "0.0.0.0:6432"
# Host name printed in db-token connection strings (empty: this node's FQDN).
public_host = ""
# TLS certificate and key (self-signed ones are made by 'bastion init').
# With require_tls, plaintext connections are refused before any password is sent.
tls_cert = "keys/pg_tls.crt"
tls_key = "keys/pg_tls.key"
require_tls = true
# Lifetime of a database token (never past the end of the grant it came from).
token_ttl = 3600
# Seconds a client may take to log in (TLS, startup, password; login_timeout is the
# older name, still read).
login_grace = 30
connect_timeout = 10
# Logins in progress at once, and from one source (IPv4 address or IPv6 /64;
# 0 = no per-source cap); more are refused at once with SQLSTATE 53300.
max_startups = 100
per_source_max_startups = 10
# Largest client message (a Query, Bind or CopyData) accepted, in bytes.
max_message_bytes = 67108864
# Seconds a session may stay paused because the client does not read results
# before it ends as resource-limit (0 = stay paused; README "Limits").
stalled_reader_timeout = 300
# Result rows recorded per statement (0 = none). A value is recorded as *** when
# the table column it comes from matches mask_columns (shell patterns,
# case-insensitive), whatever the query calls it: aliases, expressions
# (upper(api_token)), whole rows (row_to_json(t)) and views are followed through
# the target's catalog and the statement's parse tree; a value whose origin
# cannot be established (unparsable text, EXECUTE, FETCH, a function outside
# pg_catalog) is masked too.
capture_rows = 0
mask_columns = ["*password*", "*secret*", "*token*"]
# Regexes (Python syntax): a captured value matching any is recorded as ***
# whatever its column. None by default; for example:
# mask_patterns = [
#   '\\bAKIA[0-9A-Z]{{16}}\\b',                  # AWS access key id
#   '\\b(ghp|gho|ghs)_[A-Za-z0-9]{{36}}\\b',     # GitHub tokens
#   '\\b(sk|rk)_live_[A-Za-z0-9]{{16,}}',       # Stripe live keys
#   '\\b(?:\\d[ -]?){{13,16}}\\b',                # card-number-like digit runs
#   '-----BEGIN [A-Z ]*PRIVATE KEY-----',
# ]
mask_patterns = []
# As [ssh] proxy_protocol / trusted_proxies, for the PostgreSQL listener.
proxy_protocol = false
trusted_proxies = []

[control]
# Control API for admins and auditors (bastion tui, bastion control ...): a Unix
# socket, usable by root and the node's own uid, by bastion users with role admin
# or auditor. Empty: no socket.
socket = "control.sock"
# Optional TCP listener with TLS for remote admins (off unless set). Clients then
# need a token from 'bastion user control-token NAME'.
# listen = "0.0.0.0:7443"
tls_cert = "keys/control_tls.crt"
tls_key = "keys/control_tls.key"

[mfa]
issuer = "bastion"
# After max_failures wrong codes within failure_window seconds the user is
# locked for lockout seconds.
max_failures = 5
failure_window = 600
lockout = 900
# TOTP steps of clock drift accepted either side (each step is 30 s).
valid_window = 1

[metrics]
# GET /healthz and /metrics (Prometheus) on this address; empty: off.
# Keep it on loopback or a monitoring network: it is unauthenticated.
listen = ""

[timebox]
# Seconds before a grant's end at which live sessions are warned.
warn_before = [300, 60]
# How often live sessions' grants are re-read (revocation takes effect within this).
poll_interval = 0.5

"""
    + REQUESTS_TEMPLATE
    + POLICY_TEMPLATE
    + ALERTS_TEMPLATE
    + USERS_TEMPLATE
    + LOGIN_LIMITS_TEMPLATE
    + """
# Notifications (access requests, alerts, engagements): none by default. Each sink
# is an array entry; repeat the block for more. Delivery is in the background with
# retries; a notification that cannot be delivered is audited as notify.failed.
#
# [[notify.webhook]]
# url = "https://hooks.example.com/bastion"
# # "json" (the event's fields) or "slack" (a Slack incoming-webhook message).
# format = "json"
# # Globs over event names (request.*, alert.*, engagement.*); default: all.
# events = ["request.*", "alert.*"]
# # Key for X-Bastion-Signature: sha256=<HMAC-SHA256 hex of the body>.
# secret_file = "keys/webhook.secret"
# timeout = 10
#
# [[notify.syslog]]
# # "/dev/log", "udp://HOST:514" or "tcp://HOST:601" (RFC 5424; TCP octet-counted).
# address = "/dev/log"
# facility = "authpriv"
# events = ["*"]
# timeout = 10
"""
)


def render_config(node: str, listen: str) -> str:
    """The commented default config ``bastion init`` writes."""
    return CONFIG_TEMPLATE.format(
        node=node,
        listen=listen,
        ciphers=_toml_list(DEFAULT_CIPHERS),
        kex_algorithms=_toml_list(default_kex_algorithms()),
        macs=_toml_list(DEFAULT_MACS),
        host_key_algorithms=_toml_list(DEFAULT_HOST_KEY_ALGORITHMS),
    )


def _toml_list(names: tuple[str, ...]) -> str:
    """A TOML array of strings, one per line (the algorithm defaults)."""
    return "[\n" + "".join(f'    "{n}",\n' for n in names) + "]"
