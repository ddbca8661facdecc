"""The whole benchmark suite in one command, with one table of the targets at the end.

Runs ``recording.py``, ``ssh.py`` and ``pg.py`` one after the other (never at
the same time: each measures against peers in its own run and a second
benchmark would only add noise to both), prints each one's report as it
comes, and ends with every row of those reports that carries a verdict
(``met`` / ``**missed**``): the issue's targets, measured in this run.

Run from the repository root::

    PYTHONPATH=. python bench/all.py            # ~25 min on 2 cores (pg.py: ~19)
    PYTHONPATH=. python bench/all.py --quick    # ~6 min, smaller workloads
    PYTHONPATH=. python bench/all.py --sessions 500 --out bench/latest.md

Progress goes to stderr; the report (markdown) to stdout and, with ``--out``,
to that file too.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERDICT = ("met", "**missed**")


def verdict_tables(report: str) -> list[str]:
    """Each markdown table of ``report`` cut down to its rows with a met/missed verdict."""
    out: list[str] = []
    lines = report.splitlines()
    head: list[str] = []
    kept: list[str] = []
    for i, line in enumerate(lines):
        if not line.startswith("|"):
            if kept:
                out += [*head, *kept, ""]
            head, kept = [], []
            continue
        if i + 1 < len(lines) and lines[i + 1].startswith("|-"):
            head = [line, lines[i + 1]]
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if any(c.endswith(VERDICT) for c in cells):
            kept.append(line)
    if kept:
        out += [*head, *kept, ""]
    return out


def run(script: str, args: Sequence[str]) -> str:
    """One benchmark script's report (its stdout); its progress passes to our stderr."""
    cmd = [sys.executable, str(HERE / script), *args]
    print(f"[bench/all {time.strftime('%H:%M:%S')}] {' '.join(cmd[1:])}", file=sys.stderr)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        return f"**{script} failed (exit {done.returncode})**\n\n{done.stdout}"
    return done.stdout


def main(argv: Sequence[str] | None = None) -> None:
    """Run the suite and print the combined report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="each script's --quick")
    ap.add_argument("--sessions", type=int, help="concurrent SSH sessions (ssh.py --sessions)")
    ap.add_argument("--out", type=Path, help="also write the report to this file")
    args = ap.parse_args(argv)
    quick = ["--quick"] if args.quick else []
    started = time.monotonic()
    parts: list[tuple[str, str]] = [
        ("recording.py", run("recording.py", quick)),
        (
            "ssh.py",
            run("ssh.py", quick + (["--sessions", str(args.sessions)] if args.sessions else [])),
        ),
        ("pg.py", run("pg.py", quick)),
    ]
    lines = [f"# bastion benchmark suite ({'quick' if args.quick else 'full'} run)\n"]
    for name, report in parts:
        lines += [f"## {name}\n", report.rstrip(), ""]
    lines.append("## Targets (the rows with a verdict, from the reports above)\n")
    for _, report in parts:
        lines += verdict_tables(report)
    lines.append(f"\n({time.monotonic() - started:.0f} s)")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
