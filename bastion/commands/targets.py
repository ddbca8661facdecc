"""The argument parsers of ``bastion.cli_targets``'s commands (their handlers load lazily)."""

from __future__ import annotations

from bastion.commands import AddOpt, Sub, lazy
from bastion.store.models import TLS_MODES


def add_target_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion target ...``"""
    target = sub.add_parser("target", help="manage targets (SSH hosts, PostgreSQL databases)")
    ts = target.add_subparsers(dest="target_command", metavar="ACTION", required=True)
    p = ts.add_parser(
        "add",
        help="add an SSH or PostgreSQL target",
        description="SSH: --ssh HOST:PORT --login L (--host-key F | --scan | --host-ca F). "
        "PostgreSQL: --postgres HOST:PORT --database DB --credset NAME:USER[:SOURCE]...",
    )
    p.add_argument("name")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--ssh", metavar="HOST:PORT", help="address of the target sshd")
    where.add_argument("--postgres", metavar="HOST:PORT", help="address of the PostgreSQL server")
    ssh = p.add_argument_group("SSH targets")
    ssh.add_argument(
        "--login",
        action="append",
        help="login (OS user) the bastion may use there; repeatable, first is default",
    )
    ssh.add_argument("--principal", help="certificate principal (default: bastion-NAME)")
    key = ssh.add_mutually_exclusive_group()
    key.add_argument("--host-key", metavar="FILE", help="pin this host public key file")
    key.add_argument(
        "--scan",
        action="store_true",
        help="fetch the host key now and pin it (check the printed fingerprint)",
    )
    ssh.add_argument(
        "--host-ca",
        action="append",
        metavar="FILE",
        help="trust host certificates signed by this CA public key",
    )
    pg = p.add_argument_group("PostgreSQL targets")
    pg.add_argument("--database", metavar="DB", help="database name on the server")
    pg.add_argument(
        "--credset",
        action="append",
        metavar="NAME:USER[:SOURCE]",
        help="a credential set the bastion logs in with (repeatable); SOURCE is "
        "file:/path or env:VAR holding the password, absent for trust",
    )
    pg.add_argument(
        "--tls",
        choices=TLS_MODES,
        help="TLS to the server: disable, prefer (default), require, verify-full",
    )
    pg.add_argument("--ca-file", metavar="FILE", help="CA certificate for --tls verify-full")
    p.add_argument(
        "--label",
        action="append",
        metavar="KEY=VALUE",
        help="a label access profiles select by, e.g. env=staging (repeatable)",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_targets:cmd_target_add"))
    p = ts.add_parser(
        "list", help="list live targets (with their own request policy, if any; --all: removed too)"
    )
    add_config(p)
    add_json(p)
    p.add_argument("--all", action="store_true", help="include removed targets, marked with when")
    p.set_defaults(func=lazy("bastion.cli_targets:cmd_target_list"))
    p = ts.add_parser("show", help="one target and the request policy in effect for it")
    p.add_argument("name")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_targets:cmd_target_show"))
    p = ts.add_parser(
        "set",
        help="set who must approve requests for a target, and for how long at most",
        description="Overrides the [requests] defaults for one target: a request for it "
        "needs N distinct approvers, only from the names and @groups listed, and may last "
        "at most DURATION. A request for several targets gets the strictest of them. "
        "Audited.",
    )
    p.add_argument("name")
    p.add_argument(
        "--approvals", type=int, metavar="N", help="distinct approvals a request needs (>= 1)"
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--approvers",
        nargs="+",
        action="extend",
        metavar="NAME|@GROUP",
        help="only these users and groups may approve (replaces the list)",
    )
    who.add_argument(
        "--any-approver", action="store_true", help="any approver or admin may approve again"
    )
    p.add_argument(
        "--max-request", metavar="DURATION", help="longest access a request may get (e.g. 4h)"
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_targets:cmd_target_set"))
    p = ts.add_parser(
        "label",
        help="set or remove a target's labels (what access profiles select)",
        description="Set labels (KEY=VALUE, replacing a key's value) and remove others "
        "(--remove KEY). Profiles are evaluated when a contractor connects: a new label "
        "gives access at once, a removed one ends it, live sessions included "
        "(reason label-removed). Audited.",
    )
    p.add_argument("name")
    p.add_argument("labels", nargs="*", metavar="KEY=VALUE", help="labels to set")
    p.add_argument(
        "--remove", action="append", metavar="KEY", help="remove this label (repeatable)"
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_targets:cmd_target_label"))
    p = ts.add_parser("remove", help="remove a target (revokes its grants)")
    p.add_argument("name")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_targets:cmd_target_remove"))
    p = ts.add_parser("setup", help="print the sshd_config lines and principals file for a target")
    p.add_argument("name")
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_targets:cmd_target_setup"))
