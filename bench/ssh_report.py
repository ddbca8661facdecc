"""The SSH benchmark's results and its tables (summary with verdicts, spread,
concurrency)."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from report import percentile, table
from ssh_concurrency import Conc, Verified
from ssh_peers import FLOOR, SAME_KEX

PEERS = ("bastion", "direct", "ProxyJump")
RELAY_PEERS = ("bastion", FLOOR, "direct", "ProxyJump")
"""The peers of the throughput and echo figures (the floor has no login or concurrency
figure: its login is a plain key and it keeps no per-session state worth measuring)."""


@dataclass(frozen=True)
class Scale:
    """How big each measurement is (full run or --quick)."""

    setup_runs: int
    zero_mib: int
    text_mb: int
    stream_reps: int
    echo_samples: int
    sessions: int


FULL = Scale(
    setup_runs=15, zero_mib=256, text_mb=200, stream_reps=3, echo_samples=300, sessions=100
)
QUICK = Scale(setup_runs=7, zero_mib=64, text_mb=50, stream_reps=3, echo_samples=100, sessions=30)


def verdict(ratio: float, target: float, higher_is_better: bool) -> str:
    ok = ratio >= target if higher_is_better else ratio <= target
    return "met" if ok else "**missed**"


@dataclass
class Results:
    scale: Scale
    ramp: int
    setup: dict[str, list[float]] = field(default_factory=dict)
    setup_same_kex: dict[str, list[float]] = field(default_factory=dict)
    shell_start: float = 0.0
    zero: dict[str, list[float]] = field(default_factory=dict)
    text: dict[str, list[float]] = field(default_factory=dict)
    text_bytes: int = 0
    zero_cpu: dict[str, list[float]] = field(default_factory=dict)
    text_cpu: dict[str, list[float]] = field(default_factory=dict)
    echo: dict[str, list[float]] = field(default_factory=dict)
    conc: dict[str, Conc] = field(default_factory=dict)
    conc_verified: Verified | None = None
    all_verified: Verified | None = None


def bastion_only(figure: str, value: str, target: str = "", result: str = "") -> list[str]:
    """A summary row with a figure for the bastion alone (no peer, no ratio)."""
    return [figure, value, "-", "-", "-", "", "", target, result]


def summary(r: Results) -> str:
    rows: list[list[str]] = []
    med = statistics.median

    def add(
        figure: str,
        data: dict[str, list[float]],
        fmt: Callable[[float], str],
        stat: Callable[[list[float]], float],
        target: float,
        higher: bool,
    ) -> None:
        vals = {p: stat(data[p]) for p in RELAY_PEERS if p in data}
        ratio = vals["bastion"] / vals["ProxyJump"]
        floor = f"{vals[FLOOR] / vals['ProxyJump']:.2f}x" if FLOOR in vals else ""
        rel = "≥" if higher else "≤"
        rows.append(
            [
                figure,
                *(fmt(vals[p]) if p in vals else "-" for p in RELAY_PEERS),
                f"{ratio:.2f}x",
                floor,
                f"{rel} {target:.1f}x",
                verdict(ratio, target, higher),
            ]
        )

    def ms(v: float) -> str:
        return f"{v * 1000:.0f} ms"

    def ms1(v: float) -> str:
        return f"{v * 1000:.2f} ms"

    def mbs(v: float) -> str:
        return f"{v:.0f} MB/s"

    def p99(v: list[float]) -> float:
        return percentile(v, 99)

    s = r.scale
    add(f"setup, `ssh … true`, stock (median of {s.setup_runs})", r.setup, ms, med, 1.0, False)
    add(
        f"setup, `ssh … true`, {SAME_KEX} everywhere (median of {s.setup_runs})",
        r.setup_same_kex,
        ms,
        med,
        1.0,
        False,
    )
    add(
        f"PTY throughput, `head -c {s.zero_mib}M /dev/zero` (median of {s.stream_reps})",
        r.zero,
        mbs,
        med,
        1.0,
        True,
    )
    add(
        f"PTY throughput, `cat` {r.text_bytes / 1e6:.0f} MB coloured log "
        f"(median of {s.stream_reps})",
        r.text,
        mbs,
        med,
        1.0,
        True,
    )
    n_echo = len(r.echo["bastion"])
    add(f"keystroke echo p50 ({n_echo} samples)", r.echo, ms1, med, 1.2, False)
    add(f"keystroke echo p99 ({n_echo} samples)", r.echo, ms1, p99, 1.5, False)
    n = s.sessions
    done = {p: r.conc[p] for p in PEERS}
    all_ok = all(c.completed == n for c in done.values())
    rows.append(
        [
            f"{n} concurrent sessions completed (exit 0, exact output)",
            f"{done['bastion'].completed}/{n}",
            "-",
            *(f"{done[p].completed}/{n}" for p in PEERS[1:]),
            "",
            "",
            f"all {n}",
            "met" if all_ok else "**missed**",
        ]
    )
    cv, av = r.conc_verified, r.all_verified
    assert cv is not None and av is not None
    recorded_all = cv.total >= done["bastion"].completed
    rows.append(
        bastion_only(
            f"recordings intact: those {n} sessions / whole run",
            f"{cv.intact}/{cv.total} / {av.intact}/{av.total}",
            "all",
            "met" if recorded_all and not cv.problems and not av.problems else "**missed**",
        )
    )
    kib = {p: done[p].kib_per_session for p in PEERS}
    rows.append(
        [
            "memory per idle session (USS growth of the hop)",
            f"{kib['bastion']:.0f} KiB",
            "-",
            *(f"{kib[p]:.0f} KiB" for p in PEERS[1:]),
            f"{kib['bastion'] / kib['ProxyJump']:.2f}x" if kib["ProxyJump"] > 0 else "n/a",
            "",
            "",
            "",
        ]
    )
    b = done["bastion"]
    rows.append(
        bastion_only(
            f"bastion VmRSS: before / {b.up} idle / peak",
            f"{b.rss_before / 1024:.0f} / {b.rss_idle / 1024:.0f} / {b.rss_peak / 1024:.0f} MiB",
        )
    )
    rows.append(
        bastion_only(
            "bastion VmRSS per idle session",
            f"{(b.rss_idle - b.rss_before) / max(b.up, 1):.0f} KiB",
        )
    )
    head = [
        "figure",
        *RELAY_PEERS,
        "bastion/ProxyJump",
        "floor/ProxyJump",
        "target",
        "result",
    ]
    return table(head, rows)


def details(r: Results) -> str:
    rows: list[list[str]] = []

    def spread(name: str, data: dict[str, list[float]], scale: float, unit: str) -> None:
        for p in [p for p in RELAY_PEERS if p in data]:
            v = [x * scale for x in data[p]]
            rows.append(
                [
                    name,
                    p,
                    str(len(v)),
                    f"{statistics.median(v):.2f} {unit}",
                    f"{min(v):.2f}",
                    f"{percentile(v, 90):.2f}",
                    f"{max(v):.2f}",
                ]
            )

    spread("setup, stock", r.setup, 1000, "ms")
    spread(f"setup, {SAME_KEX}", r.setup_same_kex, 1000, "ms")
    spread("/dev/zero", r.zero, 1, "MB/s")
    spread("coloured log", r.text, 1, "MB/s")
    spread("echo", r.echo, 1000, "ms")
    return table(["figure", "peer", "n", "median", "min", "p90", "max"], rows)


def conc_details(r: Results) -> str:
    rows = []
    for p in PEERS:
        c = r.conc[p]
        rows.append(
            [
                p,
                f"{c.up}/{c.n}",
                f"{c.ramp_seconds:.1f} s",
                f"{c.burst_seconds:.1f} s",
                f"{c.completed}",
                f"{c.failed}",
                f"{c.uss_before / 1024:.1f} MiB",
                f"{c.uss_idle / 1024:.1f} MiB",
                f"{c.kib_per_session:.0f} KiB",
            ]
        )
    head = [
        "peer",
        "up",
        "ramp",
        "output burst",
        "completed",
        "failed",
        "hop USS before",
        "hop USS idle",
        "per session",
    ]
    return table(head, rows)
