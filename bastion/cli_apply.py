"""``bastion apply FILE.toml``: make users, targets, profiles and standing grants match a file.

Reads and checks the file (``bastion.provision.spec``), compares it with the
store (``plan``), prints the plan as a diff, and unless ``--dry-run`` applies it
in one audited transaction (``execute``). The format is documented by
``deploy/apply-example.toml``.
"""

from __future__ import annotations

import argparse
import json
import time

from bastion.cli_shared import opened
from bastion.provision import spec
from bastion.provision.execute import apply_origin, execute, snapshot
from bastion.provision.plan import make_plan


def cmd_apply(args: argparse.Namespace) -> int:
    """Print the plan; apply it unless --dry-run."""
    desired = spec.load(args.file)
    with opened(args) as (config, store):
        now = time.time()
        plan = make_plan(
            desired,
            snapshot(store, now),
            now,
            prune=args.prune,
            require_end_date=config.users.require_end_date,
        )
        events = [] if args.dry_run else execute(store, plan, apply_origin(desired), now)
    sessions = sum(len(e.details.get("sessions") or []) for e in events)
    if args.json:
        out = {
            "file": desired.path,
            "sha256": desired.sha256,
            "dry_run": args.dry_run,
            "prune": args.prune,
            "changes": [
                {"sign": c.sign, "kind": c.kind, "subject": c.subject, "details": list(c.details)}
                for c in plan.changes
            ],
            "left_alone": list(plan.left_alone),
            "notes": list(plan.notes),
            "audit_rows": len(events),
            "sessions_ended": sessions,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(plan.render(), end="")
    if args.dry_run:
        if plan.changes:
            print("dry run: nothing was changed; run without --dry-run to apply")
    elif events:
        print(
            f"applied {len(plan.changes)} change(s) in one transaction ({len(events)} audit rows)"
        )
        if sessions:
            print(f"{sessions} live session(s) of disabled users will be ended within a poll")
    return 0
