"""Access requests over SSH: the words after ``ssh alice@bastion`` and the text shown back.

``request``, ``requests``, ``approve``, ``deny`` and ``drop`` are built-ins next
to ``grants`` and ``db-token``: like them, the first word of the command wins
over a target of the same name (such a target stays reachable as
``ssh alice%request@bastion``). Pure functions only: ``parse`` turns the words
into a command, the ``*_text`` functions say what happened; the dialogue that
runs them on the node is ``bastion.ssh.request_dialogue``.

OpenSSH joins the remote words with spaces and drops the local quotes, so
``--reason "fix nginx"`` arrives as two words: ``--reason`` takes every word up
to the next option, and quotes are honoured when they survive (``"'a b'"``).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bastion.errors import UsageError
from bastion.grants import format_time
from bastion.ssh.login_name import valid_name
from bastion.store.models import AccessRequest, Grant, RequestKind, RequestState
from bastion.timeparse import format_duration, parse_duration, parse_time

COMMANDS = frozenset({"request", "requests", "approve", "deny", "drop"})
"""First words that are request built-ins, never target names, in the command form."""

USAGE = """\
usage:
  ssh USER@BASTION request TARGET[,TARGET...] --for DURATION --reason TEXT
                   [--login L] [--allow scp,sftp,port-forward,agent] [--start TIME] [--wait]
  ssh USER@BASTION request --profile PROFILE --for DURATION --reason TEXT
                   [--login L] [--allow ...] [--start TIME] [--wait]
  ssh USER@BASTION request --extend GRANT_ID --for DURATION --reason TEXT [--wait]
  ssh USER@BASTION request TARGET --break-glass --reason TEXT [--for DURATION]
  ssh USER@BASTION requests                 your requests, newest first
  ssh USER@BASTION drop GRANT_ID            give a grant back now
  ssh USER@BASTION requests --pending       requests you may decide (approvers)
  ssh USER@BASTION approve ID [--for SHORTER] [--targets A,B] [--allow X|none] [--reason TEXT]
  ssh USER@BASTION deny ID --reason TEXT
"""

HELP = """\
  ssh alice@BASTION request web1 --for 2h --reason fix nginx   ask for access
  ssh alice@BASTION request --profile prod-db --for 1h --reason ...   (an access profile)
  ssh alice@BASTION requests        your requests; approvers: requests --pending,
                                    approve ID, deny ID --reason TEXT
"""

_VALUE_OPTIONS = frozenset(
    {"--for", "--login", "--allow", "--start", "--extend", "--targets", "--profile"}
)
_TEXT_OPTIONS = frozenset({"--reason"})
_FLAGS = frozenset({"--wait", "--break-glass", "--pending"})


class CommandError(Exception):
    """A command that cannot run; the message is for the person, ``status`` the exit code."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def usage_error(message: str) -> CommandError:
    """A malformed command line (exit 2, like argparse)."""
    return CommandError(f"{message}\n{USAGE}", 2)


@dataclass(frozen=True)
class NewRequest:
    """``request TARGET[,TARGET...] ...`` (also ``--break-glass``), or ``request --profile P ...``
    (``targets`` then empty)."""

    targets: tuple[str, ...]
    duration: float | None
    reason: str
    login: str | None = None
    options: tuple[str, ...] = ()
    start_at: float | None = None
    wait: bool = False
    break_glass: bool = False
    profile: str | None = None


@dataclass(frozen=True)
class ExtendRequest:
    """``request --extend GRANT_ID --for DURATION --reason TEXT``."""

    grant_id: int
    duration: float
    reason: str
    wait: bool = False


@dataclass(frozen=True)
class ListRequests:
    """``requests`` (own) or ``requests --pending`` (to decide)."""

    pending: bool = False


@dataclass(frozen=True)
class DropGrant:
    """``drop GRANT_ID``."""

    grant_id: int


@dataclass(frozen=True)
class Approve:
    """``approve ID [--for D] [--targets A,B] [--allow X] [--reason T]`` (narrowing only)."""

    request_id: int
    duration: float | None = None
    targets: tuple[str, ...] | None = None
    options: tuple[str, ...] | None = None
    reason: str | None = None


@dataclass(frozen=True)
class Deny:
    """``deny ID --reason TEXT``."""

    request_id: int
    reason: str


Command = NewRequest | ExtendRequest | ListRequests | DropGrant | Approve | Deny


def split_words(text: str) -> list[str]:
    """Shell-like words when the quoting is balanced, plain words otherwise ("it's")."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _options(
    command: str, words: Sequence[str], allowed: frozenset[str]
) -> tuple[list[str], dict[str, str]]:
    """Positional words and ``{option: value}`` (flags get ``""``); refuses what is unknown."""
    positional: list[str] = []
    found: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if not word.startswith("--"):
            positional.append(word)
            continue
        name, eq, inline = word.partition("=")
        if name not in allowed:
            raise usage_error(f"'{command}' has no option {name}")
        if name in found:
            raise usage_error(f"{name} given twice")
        if name in _FLAGS:
            if eq:
                raise usage_error(f"{name} takes no value")
            found[name] = ""
            continue
        values = [inline] if eq else []
        while i < len(words) and not words[i].startswith("--"):
            if name not in _TEXT_OPTIONS and values:
                break
            values.append(words[i])
            i += 1
        if not values or not " ".join(values).strip():
            raise usage_error(f"{name} needs a value")
        found[name] = " ".join(values)
    return positional, found


def _id(text: str, what: str) -> int:
    digits = text[1:] if text.startswith("#") else text
    if not digits.isdigit() or int(digits) < 1:
        raise usage_error(f"'{text}' is not a {what} number")
    return int(digits)


def _names(text: str, what: str) -> tuple[str, ...]:
    names = tuple(n for n in text.split(",") if n)
    bad = [n for n in names if not valid_name(n)]
    if not names or bad:
        raise usage_error(f"'{bad[0] if bad else text}' is not a {what} name")
    return names


def _allow(text: str) -> tuple[str, ...]:
    if text.strip().lower() in ("none", "-"):
        return ()
    return tuple(o.strip() for o in text.split(",") if o.strip())


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except UsageError as e:
        raise usage_error(str(e)) from e


def _one(positional: list[str], what: str, command: str) -> str:
    if len(positional) != 1:
        shown = " ".join(positional) or "nothing"
        raise usage_error(f"'{command}' takes one {what} (got: {shown})")
    return positional[0]


def parse(command: str, text: str, now: float) -> Command:
    """The command for ``command`` (one of COMMANDS) and the rest of the line.

    Raises CommandError (status 2) saying what is wrong, followed by the usage.
    """
    words = split_words(text)
    if command == "request":
        return _parse_request(words, now)
    if command == "requests":
        positional, opts = _options(command, words, frozenset({"--pending"}))
        if positional:
            raise usage_error(f"'requests' takes no arguments (got: {' '.join(positional)})")
        return ListRequests(pending="--pending" in opts)
    if command == "drop":
        positional, _ = _options(command, words, frozenset())
        return DropGrant(_id(_one(positional, "grant id", command), "grant"))
    if command == "approve":
        allowed = frozenset({"--for", "--targets", "--allow", "--reason"})
        positional, opts = _options(command, words, allowed)
        return Approve(
            request_id=_id(_one(positional, "request id", command), "request"),
            duration=_duration(opts["--for"]) if "--for" in opts else None,
            targets=_names(opts["--targets"], "target") if "--targets" in opts else None,
            options=_allow(opts["--allow"]) if "--allow" in opts else None,
            reason=opts.get("--reason"),
        )
    if command == "deny":
        positional, opts = _options(command, words, frozenset({"--reason"}))
        request_id = _id(_one(positional, "request id", command), "request")
        if "--reason" not in opts:
            raise usage_error("deny needs --reason TEXT (the requester is told)")
        return Deny(request_id, opts["--reason"])
    raise usage_error(f"unknown command '{command}'")


def _what_asked(positional: list[str], profile: str | None, break_glass: bool) -> tuple[str, ...]:
    """The targets named, or () with a valid ``--profile`` (never both)."""
    if profile is None:
        return _names(_one(positional, "TARGET[,TARGET...]", "request"), "target")
    if positional:
        raise usage_error(f"name targets or a --profile, not both (got: {' '.join(positional)})")
    if not valid_name(profile):
        raise usage_error(f"'{profile}' is not a profile name")
    if break_glass:
        raise usage_error("--break-glass names targets, not a --profile")
    return ()


def _parse_request(words: list[str], now: float) -> NewRequest | ExtendRequest:
    allowed = _VALUE_OPTIONS - {"--targets"} | _TEXT_OPTIONS | {"--wait", "--break-glass"}
    positional, opts = _options("request", words, allowed)
    if "--reason" not in opts:
        raise usage_error("say why with --reason TEXT (it goes to the approvers)")
    reason, wait = opts["--reason"], "--wait" in opts
    if "--extend" in opts:
        extra = sorted(set(opts) - {"--extend", "--for", "--reason", "--wait"})
        if positional or extra:
            raise usage_error(
                "request --extend takes only GRANT_ID, --for, --reason and --wait "
                f"(got: {' '.join(positional + extra)})"
            )
        if "--for" not in opts:
            raise usage_error("say how much longer with --for DURATION, e.g. --for 1h")
        return ExtendRequest(_id(opts["--extend"], "grant"), _duration(opts["--for"]), reason, wait)
    profile = opts.get("--profile")
    targets = _what_asked(positional, profile, "--break-glass" in opts)
    login = opts.get("--login")
    if login is not None and not valid_name(login):
        raise usage_error(f"'{login}' is not a login name")
    options = _allow(opts["--allow"]) if "--allow" in opts else ()
    duration = _duration(opts["--for"]) if "--for" in opts else None
    if "--break-glass" in opts:
        if wait or "--start" in opts:
            raise usage_error("--break-glass is access now: no --wait, no --start")
        return NewRequest(targets, duration, reason, login, options, break_glass=True)
    if duration is None:
        raise usage_error("say how long with --for DURATION, e.g. --for 2h")
    start_at = None
    if "--start" in opts:
        try:
            start_at = parse_time(opts["--start"], now)
        except UsageError as e:
            raise usage_error(str(e)) from e
    return NewRequest(targets, duration, reason, login, options, start_at, wait, profile=profile)


# --- what is shown -----------------------------------------------------------------------


def grant_lines(grants: Sequence[Grant]) -> list[str]:
    """One line per grant: id, target (or profile), login, end, options."""
    return [
        f"  grant #{g.id}  {g.target_name or f'profile {g.profile_name}'}"
        f" as {g.login or g.credset or '-'}"
        f"  until {format_time(g.not_after)}"
        + (f"  ({','.join(sorted(g.options))})" if g.options else "")
        for g in grants
    ]


def asked_for(r: AccessRequest) -> str:
    """What a request names: its targets, or ``profile NAME``."""
    return f"profile {r.profile}" if r.profile is not None else ",".join(r.targets)


def reach_text(reach: Sequence[str] | None) -> str:
    """`` (reaches now: a, b)`` for a profile request's listing; empty when not known."""
    if reach is None:
        return ""
    return f" (reaches now: {', '.join(reach) or 'nothing'})"


def _what(r: AccessRequest, reach: Sequence[str] | None = None) -> str:
    if r.held is not None:
        h, login = r.held, f" as {r.login}" if r.login else ""
        return f"{h.kind} on {r.targets[0]}{login}: {h.text!r} (session {h.session_id})"
    if r.kind is RequestKind.EXTEND:
        by = format_duration(r.duration)
        return f"extend grant #{r.extends_grant_id} ({asked_for(r)}) by {by}"
    login = f" as {r.login}" if r.login else ""
    opts = f" with {','.join(sorted(r.options))}" if r.options else ""
    start = f" from {format_time(r.start_at)}" if r.start_at else ""
    return (
        f"{asked_for(r)}{reach_text(reach)}{login} for {format_duration(r.duration)}{start}{opts}"
    )


def approvers_line(approvers: Sequence[str], needed: int) -> str:
    """Who can decide, and how many of them must approve."""
    count = f" ({needed} distinct approvals needed)" if needed > 1 else ""
    if not approvers:
        return "nobody can approve it yet: ask an admin to add an approver" + count
    return f"can approve: {', '.join(approvers)}{count}"


def created_text(
    request: AccessRequest,
    grants: Sequence[Grant],
    approvers: Sequence[str],
    needed: int,
    reach: Sequence[str] | None = None,
) -> str:
    """After ``request``: pending (who decides, when it lapses) or approved at once.

    ``reach``: what a profile request's profile reaches now, shown with it.
    """
    if request.state is RequestState.APPROVED:
        lines = [
            f"request #{request.id} approved at once: {_what(request, reach)}",
            f"  by rule: {request.decision_reason or request.decided_by}",
            *grant_lines(grants),
        ]
    else:
        lines = [
            f"request #{request.id} pending: {_what(request, reach)}",
            approvers_line(approvers, needed),
            f"lapses at {format_time(request.lapses_at)} if nobody decides",
            "the clock starts at approval; see 'requests' for its state",
        ]
    return "\n".join(lines) + "\n"


def break_glass_text(
    request: AccessRequest, grants: Sequence[Grant], approvers: Sequence[str], asked: float | None
) -> str:
    """After ``request --break-glass``: the access, its end, and that it will be reviewed."""
    told = ", ".join(approvers) or "the admins"
    capped = " (capped: break-glass is short)" if asked and asked > request.duration else ""
    return (
        "\n".join(
            [
                f"break-glass: request #{request.id} gives access now"
                f" for {format_duration(request.duration)}{capped}",
                *grant_lines(grants),
                f"every approver is told ({told}); this access will be reviewed after the fact",
            ]
        )
        + "\n"
    )


def decision_text(request: AccessRequest, grants: Sequence[Grant]) -> str:
    """What ``--wait`` prints once a request is decided."""
    if request.state is RequestState.APPROVED:
        by = request.decided_by or "?"
        if request.kind is RequestKind.EXTEND:
            head = f"request #{request.id} approved by {by}: grant extended"
        else:
            head = f"request #{request.id} approved by {by}"
        return "\n".join([head, *grant_lines(grants)]) + "\n"
    if request.state is RequestState.DENIED:
        return (
            f"request #{request.id} denied by {request.decided_by or '?'}: "
            f"{request.decision_reason or 'no reason given'}\n"
        )
    return (
        f"request #{request.id} {request.state.value}: {request.decision_reason or 'no access'}\n"
    )


def own_requests_text(requests: Sequence[AccessRequest]) -> str:
    """``requests``: one line per request, newest first, with its state and outcome."""
    if not requests:
        return "no requests\n"
    lines = []
    for r in requests:
        line = f"#{r.id}\t{r.state.value}\t{r.kind.value}\t{_what(r)}\t{format_time(r.created_at)}"
        if r.state is RequestState.PENDING:
            line += f"\tlapses {format_time(r.lapses_at)}"
        elif r.decided_by or r.decision_reason:
            line += f"\tby {r.decided_by or '-'}"
            if r.state is not RequestState.APPROVED and r.decision_reason:
                line += f": {r.decision_reason}"
        if r.grant_ids:
            line += "\tgrants " + ",".join(f"#{g}" for g in r.grant_ids)
        lines.append(line + f"\treason: {r.reason}")
    return "\n".join(lines) + "\n"


def pending_text(
    requests: Sequence[tuple[AccessRequest, int]],
    reaches: Mapping[int, Sequence[str]] | None = None,
) -> str:
    """``requests --pending``: what the approver may decide, with approvals so far
    (and, for a profile request, what the profile reaches now: ``reaches`` by id)."""
    if not requests:
        return "no pending requests you can decide\n"
    lines = []
    for r, needed in requests:
        have = len({a.approver for a in r.approvals})
        reach = (reaches or {}).get(r.id)
        lines.append(
            f"#{r.id}\t{r.user_name}\t{_what(r, reach)}\tapprovals {have}/{needed}"
            f"\tlapses {format_time(r.lapses_at)}\treason: {r.reason}"
        )
    return "\n".join(lines) + "\n"


def approve_text(
    request: AccessRequest, grants: Sequence[Grant], approvers: Sequence[str], needed: int
) -> str:
    """After ``approve``: approved (the grants) or how many approvals are still missing."""
    if request.state is RequestState.APPROVED and request.held is not None:
        return f"request #{request.id} of {request.user_name} approved: the held command runs now\n"
    if request.state is RequestState.APPROVED:
        what = "extended" if request.kind is RequestKind.EXTEND else "approved"
        return (
            "\n".join(
                [f"request #{request.id} of {request.user_name} {what}", *grant_lines(grants)]
            )
            + "\n"
        )
    done = {a.approver for a in request.approvals}
    others = ", ".join(a for a in approvers if a not in done) or "nobody else yet"
    return (
        f"approval recorded; request #{request.id} needs {needed} more"
        f" distinct approval(s) (from: {others})\n"
    )


def deny_text(request: AccessRequest) -> str:
    """After ``deny``."""
    return f"request #{request.id} of {request.user_name} denied: {request.decision_reason}\n"


def drop_text(grant: Grant) -> str:
    """After ``drop``."""
    what = grant.target_name or f"profile {grant.profile_name}"
    return f"grant #{grant.id} ({what}) dropped; live sessions on it end now\n"
