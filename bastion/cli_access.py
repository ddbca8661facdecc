"""``bastion access``: what a user can reach now and exactly why, or who can reach a target.

The answers come from ``bastion.effective_access``, which asks the node's own
admission code, so what this prints is what a connection would meet.
"""

from __future__ import annotations

import argparse
import json
import time

from bastion.access_report import access_to_wire, describe, target_line, way_line
from bastion.cli_shared import opened
from bastion.effective_access import user_access, who_can_reach
from bastion.errors import UsageError


def cmd_access(args: argparse.Namespace) -> int:
    """Print a user's effective access, or (``--target``) everyone's on one target."""
    if (args.user is None) == (args.target is None):
        raise UsageError("name a user (bastion access USER) or a target (--target NAME)")
    now = time.time()
    with opened(args) as (_c, store):
        if args.user is not None:
            access = user_access(store, args.user, now, include_all=args.all)
            if args.json:
                print(json.dumps(access_to_wire(access), indent=2))
            else:
                print("\n".join(describe(access)))
            return 0
        found = who_can_reach(store, args.target, now, include_all=args.all)
    if args.json:
        print(json.dumps([access_to_wire(a) for a in found], indent=2))
        return 0
    if not found:
        print(f"{args.target}: nobody holds a current grant (--all: any grant)")
    for a in found:
        t = a.targets[0]
        verdict = target_line(t).split(": ", 1)[1]
        print(f"{a.user} ({a.role}, {a.state}) {'YES' if t.reachable else 'NO'}: {verdict}")
        if not t.reachable and t.ways:
            print("      grants would allow: " + "; ".join(way_line(w, t.kind) for w in t.ways))
    return 0
