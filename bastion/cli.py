"""The ``bastion`` command: set up, run and administer a bastion node.

Every subcommand has ``--help``; commands that print data take ``--json``.
Administrative changes are audited with the operator's name as the actor.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bastion import __version__
from bastion.commands import Handler, lazy
from bastion.errors import BastionError, UsageError


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        "-c",
        help="config file (default: $BASTION_CONFIG or ./bastion.toml)",
    )


def _add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")


def build_parser() -> argparse.ArgumentParser:
    """The whole command tree (kept in one place so --help stays complete).

    Only argument parsers are built here: each command's handler module is imported
    when that command runs (``bastion.commands.lazy``), so ``--help`` stays cheap.
    """
    from bastion.commands import (
        access,
        admin,
        apply,
        control,
        doctor,
        grants,
        lockouts,
        nodes,
        policy,
        profiles,
        requests,
        sessions,
        targets,
    )

    parser = argparse.ArgumentParser(
        prog="bastion",
        description=(
            "Privileged-session bastion: contractors reach SSH hosts and PostgreSQL "
            "databases only through it, with public key + TOTP, time-boxed grants and "
            "credentials they never see; every session is recorded."
        ),
    )
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("init", help="create config, keys and state store in a directory")
    p.add_argument("--dir", default=".", help="directory to initialise (default: .)")
    p.add_argument("--listen", default="0.0.0.0:2222", help="SSH listen address HOST:PORT")
    p.add_argument("--state-url", help="PostgreSQL URL for shared state (default: SQLite file)")
    p.add_argument("--node", help="node name (default: host name)")
    p.set_defaults(func=lazy("bastion.cli_node:cmd_init"))

    p = sub.add_parser(
        "serve",
        help="run the node: SSH and PostgreSQL listeners, control socket, metrics",
        description=(
            "Run the node until stopped. SIGTERM or SIGINT is a routine stop: new sessions "
            "are refused, live ones are told and end after [node] stop_grace seconds with "
            "reason node-stop, every recording is sealed, exit 0 (a second signal ends them "
            "at once). SIGHUP reloads the settings that can change live (time box, MFA "
            "limits, stop_grace, log_level) without dropping sessions. With [node] workers "
            "above 1 this process supervises that many workers on the same ports, passes "
            "the signals on and restarts a worker that dies."
        ),
    )
    _add_config(p)
    p.add_argument("--listen", help="override ssh.listen (HOST:PORT)")
    p.add_argument(
        "--log-level",
        default="INFO",
        help="DEBUG, INFO, WARNING (default INFO; [node] log_level in the file wins)",
    )
    p.add_argument(
        "--log-format",
        choices=["text", "json"],
        default="text",
        help="text (default) or one JSON object per line",
    )
    p.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(func=lazy("bastion.cli_node:cmd_serve"))

    p = sub.add_parser("demo", help="set up and run a local demo (bastion + demo target + user)")
    p.add_argument("--dir", default="demo", help="demo directory (default: ./demo)")
    p.add_argument("--port", type=int, default=2222, help="bastion SSH port (default 2222)")
    p.add_argument("--setup-only", action="store_true", help="prepare everything, do not serve")
    p.set_defaults(func=lazy("bastion.demo:cmd_demo"))

    p = sub.add_parser(
        "totp-code",
        help="print the current TOTP code of a user (demo/testing aid; audited as user.totp-code)",
    )
    _add_config(p)
    p.add_argument("name")
    p.set_defaults(func=lazy("bastion.demo:cmd_totp_code"))

    admin.add_user_commands(sub, _add_config, _add_json)
    targets.add_target_commands(sub, _add_config, _add_json)
    grants.add_grant_commands(sub, _add_config, _add_json)
    profiles.add_profile_commands(sub, _add_config, _add_json)
    grants.add_token_commands(sub, _add_config, _add_json)
    requests.add_request_commands(sub, _add_config, _add_json)
    admin.add_audit_commands(sub, _add_config, _add_json)
    sessions.add_session_commands(sub, _add_config, _add_json)
    policy.add_policy_commands(sub, _add_config, _add_json)
    access.add_access_commands(sub, _add_config, _add_json)
    apply.add_apply_commands(sub, _add_config, _add_json)
    control.add_control_commands(sub, _add_config, _add_json)
    nodes.add_node_commands(sub, _add_config, _add_json)
    doctor.add_doctor_command(sub, _add_config, _add_json)
    lockouts.add_lockout_commands(sub, _add_config, _add_json)
    _add_console_commands(sub)
    return parser


def _add_console_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``bastion tui``, ``bastion watch`` and ``bastion replay`` (the Textual console)."""
    operator = "bastion admin/auditor name to act as (default: $BASTION_USER or your login)"
    p = sub.add_parser("tui", help="console: browse, search, replay and watch sessions")
    p.add_argument("--user", help=operator)
    _add_config(p)
    p.set_defaults(func=lazy("replay.app:run_console"))
    p = sub.add_parser("watch", help="console: watch live sessions (admins)")
    p.add_argument("session", nargs="?", help="watch this live session directly")
    p.add_argument("--user", help=operator)
    _add_config(p)
    p.set_defaults(func=lazy("replay.app:run_console"))
    p = sub.add_parser("replay", help="console: play a recorded session")
    p.add_argument("recording", metavar="ID|FILE", help="session id, or a .bastrec file")
    p.add_argument("--user", help=operator)
    _add_config(p)
    p.set_defaults(func=lazy("replay.app:run_console"))


def _actionable(error: Exception) -> bool:
    """Bastion's own error, the control API's or a recording file's: one line, exit 1.

    The control client and recorder packages are imported here, on the error path,
    so that starting the CLI never loads them for a command that does not use them.
    """
    from bastion.control.messages import ControlError
    from recorder.errors import RecordingError

    return isinstance(error, (BastionError, ControlError, RecordingError))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bastion`` console script.

    The errors a person can act on (bastion's own, the control API's, a recording
    file's) become one line and a non-zero exit: 2 for a malformed command line
    (argparse exits 2 itself), 1 otherwise. Anything else is a bug and keeps its
    traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        return func(args)
    except UsageError as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not _actionable(e):
            raise
        print(f"bastion: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
