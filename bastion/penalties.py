"""Per-source penalties, in the spirit of OpenSSH's ``PerSourcePenalties``.

A source (an IPv4 address or an IPv6 /64, as ``bastion.startups.source_of``)
whose connections end without logging in accrues penalty seconds: ``authfail``
when it tried and failed, ``grace-exceeded`` when it sat out the login timeout,
``noauth`` when it left without trying. Penalties accrue into an expiry time;
once at least ``min`` seconds have accrued the source is refused at accept (on
both listeners: one table per node) until the expiry passes. Unlike OpenSSH,
each time a source is refused again within ``max`` seconds of its last penalty
the period doubles (capped at ``max``): a flood that waits out its penalty and
comes back gets a longer one.

Sans-IO over explicit times: the listeners call ``refusal`` at accept and
``penalise`` when an unauthenticated connection ends. Refused connections are
never penalised again (they could not have done anything).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TypeAlias

from bastion.errors import ConfigError
from bastion.startups import source_of

__all__ = ["AUTHFAIL", "GRACE_EXCEEDED", "NOAUTH", "Penalties", "PenaltyPolicy", "parse_penalties"]

AUTHFAIL = "authfail"
GRACE_EXCEEDED = "grace-exceeded"
NOAUTH = "noauth"
DEFAULT_PENALTIES = "authfail:5 noauth:1 grace-exceeded:10 min:15 max:600"
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_SOURCES = 65536
"""Sources remembered at once; past it the oldest expiry is forgotten (bounded memory)."""


@dataclass(frozen=True)
class PenaltyPolicy:
    """Seconds each kind of failure costs a source, and when enforcement starts."""

    authfail: float = 5.0
    noauth: float = 1.0
    grace_exceeded: float = 10.0
    min: float = 15.0
    max: float = 600.0
    enabled: bool = True

    def cost(self, kind: str) -> float:
        """Penalty seconds for one connection that ended as ``kind``."""
        return {AUTHFAIL: self.authfail, NOAUTH: self.noauth, GRACE_EXCEEDED: self.grace_exceeded}[
            kind
        ]


def parse_penalties(text: str, setting: str) -> PenaltyPolicy:
    """OpenSSH's syntax: ``"authfail:5 noauth:1 grace-exceeded:10 min:15 max:600"``
    (any subset; the rest keep their defaults), or ``"no"`` to turn penalties off."""
    if text.strip() in ("no", "off", "false"):
        return PenaltyPolicy(enabled=False)
    names = {
        "authfail": "authfail",
        "noauth": "noauth",
        "grace-exceeded": "grace_exceeded",
        "min": "min",
        "max": "max",
    }
    values: dict[str, float] = {}
    for item in text.split():
        key, sep, value = item.partition(":")
        if not sep or key not in names:
            raise ConfigError(
                f"{setting}: {item!r} is not KIND:SECONDS with KIND one of "
                f'{", ".join(names)} (e.g. {DEFAULT_PENALTIES!r}, or "no")'
            )
        try:
            seconds = float(value.rstrip("s"))
        except ValueError:
            raise ConfigError(f"{setting}: {item!r}: {value!r} is not seconds") from None
        if seconds < 0:
            raise ConfigError(f"{setting}: {item!r} must not be negative")
        values[names[key]] = seconds
    policy = PenaltyPolicy(
        authfail=values.get("authfail", PenaltyPolicy.authfail),
        noauth=values.get("noauth", PenaltyPolicy.noauth),
        grace_exceeded=values.get("grace_exceeded", PenaltyPolicy.grace_exceeded),
        min=values.get("min", PenaltyPolicy.min),
        max=values.get("max", PenaltyPolicy.max),
    )
    if policy.max < policy.min:
        raise ConfigError(f"{setting}: max ({policy.max:g}) is below min ({policy.min:g})")
    return policy


def parse_exempt(entries: tuple[str, ...], setting: str) -> tuple[Network, ...]:
    """Networks never penalised (a load balancer's health checks, a monitoring host)."""
    nets: list[Network] = []
    for entry in entries:
        try:
            nets.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ConfigError(
                f"{setting}: {entry!r} is not an address or network (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(nets)


@dataclass
class _Source:
    expiry: float
    active: bool = False
    strikes: int = 0
    last: float = 0.0


@dataclass
class Penalties:
    """The penalty box of one node, shared by its SSH and PostgreSQL listeners."""

    policy: PenaltyPolicy
    exempt: tuple[Network, ...] = ()
    _sources: dict[str, _Source] = field(default_factory=dict)

    def _exempt(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return True  # a Unix socket or an unknown peer: nothing to key on
        return any(ip in net for net in self.exempt)

    def refusal(self, host: str, now: float) -> str | None:
        """Why a new connection from ``host`` is refused now, or None to admit it."""
        if not self.policy.enabled:
            return None
        source = source_of(host)
        entry = self._sources.get(source)
        if entry is None:
            return None
        if entry.expiry <= now:
            if now - entry.last >= self.policy.max:
                del self._sources[source]  # quiet for max seconds: forgotten
            else:
                entry.active = False
            return None
        if not entry.active:
            return None
        return (
            f"{source} is penalised for {entry.expiry - now:.0f} more second(s) after "
            "connections that did not log in (per-source penalties)"
        )

    def penalise(self, host: str, kind: str, now: float) -> None:
        """An unauthenticated connection from ``host`` ended as ``kind``."""
        if not self.policy.enabled or self._exempt(host):
            return
        cost = self.policy.cost(kind)
        if cost <= 0:
            return
        source = source_of(host)
        entry = self._sources.get(source)
        if entry is None:
            if len(self._sources) >= MAX_SOURCES:
                oldest = min(self._sources, key=lambda s: self._sources[s].expiry)
                del self._sources[oldest]
            entry = self._sources[source] = _Source(expiry=now)
        elif now - entry.last >= self.policy.max:
            entry.strikes = 0  # quiet for max seconds: start over
        entry.last = now
        entry.expiry = max(entry.expiry, now) + cost
        if not entry.active and entry.expiry - now >= self.policy.min:
            entry.active = True
            entry.strikes += 1
            period = max(entry.expiry - now, self.policy.min) * 2 ** (entry.strikes - 1)
            entry.expiry = now + period
        entry.expiry = min(entry.expiry, now + self.policy.max)

    def penalised(self, now: float) -> dict[str, float]:
        """Sources refused now and until when (for the metrics gauge and tests)."""
        return {s: e.expiry for s, e in self._sources.items() if e.active and e.expiry > now}
