"""The argument parsers of ``bastion.cli_requests``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy


def add_request_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion request ...``"""
    req = sub.add_parser(
        "request",
        help="list and decide just-in-time access requests",
        description="Contractors ask for access with 'ssh BASTION request ...'; approvers "
        "decide over SSH or here, on the bastion host, naming themselves with --as.",
    )
    rs = req.add_subparsers(dest="request_command", metavar="ACTION", required=True)
    as_help = "the approver deciding: a user with role approver or admin, not the requester"

    p = rs.add_parser(
        "list",
        help="list requests, newest first (what waits for a decision: --pending)",
        description="Shows each request's state, targets (or 'profile NAME'), duration, "
        "approvals so far and reason, so approvers see what waits for them and auditors see "
        "what was decided. --json adds, for a profile request, the targets it reaches now.",
    )
    p.add_argument("--pending", action="store_true", help="only requests awaiting a decision")
    p.add_argument(
        "--unreviewed",
        action="store_true",
        help="only break-glass requests nobody has reviewed yet (close with 'request review')",
    )
    p.add_argument("--user", help="only this requester's requests")
    p.add_argument("--limit", type=int, default=500, help="at most this many (default 500)")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_requests:cmd_request_list"))

    p = rs.add_parser(
        "show",
        help="one request: approvals, who may approve, its grants and history",
        description="Everything an approver or auditor needs to judge one request (for a "
        "profile request: the targets the profile reaches now); the history is kept for "
        "good, also after the grants ended.",
    )
    p.add_argument("id", help="request number, e.g. 12 or #12")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_requests:cmd_request_show"))

    p = rs.add_parser(
        "approve",
        help="approve a request (optionally shorter or narrower) as --as NAME",
        description="Records one approval; the request becomes grants once it has as many "
        "distinct approvers as its targets (or its profile) need; a profile request becomes "
        "one profile grant. An approval may shorten the time, drop targets or options, "
        "never widen them. Audited with NAME and your local uid; "
        "notification sinks are told before the command exits.",
    )
    p.add_argument("id", help="request number, e.g. 12 or #12")
    p.add_argument("--as", dest="approver", metavar="NAME", required=True, help=as_help)
    p.add_argument(
        "--for", dest="duration", metavar="DURATION", help="approve a shorter time (e.g. 1h)"
    )
    p.add_argument(
        "--targets",
        action="append",
        metavar="T[,T...]",
        help="approve only these of the requested targets",
    )
    p.add_argument(
        "--allow",
        metavar="OPTIONS",
        help="approve only these of the requested options (comma list, or 'none')",
    )
    p.add_argument("--reason", help="why (shown to the requester and in the audit)")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_requests:cmd_request_approve"))

    p = rs.add_parser(
        "deny",
        help="deny a pending request as --as NAME, with a reason",
        description="Ends a pending request without access; the requester is told the "
        "reason. Audited with NAME and your local uid.",
    )
    p.add_argument("id", help="request number, e.g. 12 or #12")
    p.add_argument("--as", dest="approver", metavar="NAME", required=True, help=as_help)
    p.add_argument("--reason", required=True, help="why (the requester is told)")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_requests:cmd_request_deny"))

    p = rs.add_parser(
        "review",
        help="close the after-the-fact review of a break-glass request",
        description="Break-glass access starts without approval and stays in "
        "'request list --unreviewed' until an approver or admin other than the requester "
        "reviews it here. Audited with NAME and your local uid.",
    )
    p.add_argument("id", help="request number, e.g. 12 or #12")
    p.add_argument(
        "--as", dest="approver", metavar="NAME", required=True,
        help="the reviewer: a user with role approver or admin, not the requester",
    )  # fmt: skip
    p.add_argument("--note", required=True, help="what the review found")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_requests:cmd_request_review"))
