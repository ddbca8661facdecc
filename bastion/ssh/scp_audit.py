"""Audit legacy scp (``scp -O``) transfers relayed through the bastion.

Legacy scp is not a subsystem: the client runs ``scp -t PATH`` (sink: the target
receives, an *upload*) or ``scp -f PATH`` (source: the target sends, a *download*)
as an exec command, and the two scp processes talk the old rcp protocol over the
channel.  :func:`parse_scp_command` recognises such commands; :class:`ScpAuditor`
is a sans-IO observer of the channel bytes that reports each file as a
:class:`~bastion.ssh.sftp_audit.FileEvent`.  (OpenSSH 9's plain ``scp`` uses SFTP
instead; :mod:`bastion.ssh.sftp_audit` covers that.)

The protocol, as OpenSSH's scp.c speaks it
    The *source* sends control records, one line each: ``T<mtime> 0 <atime> 0``
    (times for the next record, with ``-p``), ``C<mode> <size> <name>`` (a file,
    followed by exactly ``size`` data bytes and one status byte), ``D<mode> 0 <name>``
    (enter a directory, with ``-r``) and ``E`` (leave it).  Lines starting with
    ``\\x01`` (error) or ``\\x02`` (fatal) carry a message instead.  The *sink*
    answers every record, and every file's data, with one response: ``\\x00`` for
    success or ``\\x01``/``\\x02`` followed by a message line; its first response
    comes before any record.

Why both directions are read
    When the sink refuses a ``C`` record (permission denied, say) the source skips
    that file's data and sends the next record.  The sender's stream alone is
    therefore ambiguous; the auditor pairs each record with the sink's response,
    which the source always waits for.  Bytes that arrive ahead of the response they
    depend on are buffered (bounded by ``max_ahead``), so the order in which the
    relay feeds the two directions does not change the result.

Paths are the names from the records joined with the directory stack, relative
to the transfer root (the sink decides where that is; log :class:`ScpCommand`
``paths`` next to the events).  Names are decoded with
:func:`~bastion.ssh.sftp_audit.decode_path` (UTF-8, backslashreplace).

Hostile input raises :class:`ScpAuditError` and nothing else; control and
message lines are capped at ``max_line`` bytes and directory depth at
``max_depth``.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Final

from bastion.ssh.sftp_audit import FileEvent, decode_path

__all__ = [
    "DEFAULT_MAX_AHEAD",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_LINE",
    "ScpAuditError",
    "ScpAuditor",
    "ScpCommand",
    "parse_scp_command",
]

#: OpenSSH's sink reads records into a 2048-byte buffer; twice that is generous.
DEFAULT_MAX_LINE: Final = 4096
#: Deeper than PATH_MAX allows with one-character names.
DEFAULT_MAX_DEPTH: Final = 2048
#: Sender bytes held while waiting for the sink's response (only a relay that
#: feeds a response late needs any).
DEFAULT_MAX_AHEAD: Final = 4 * 1024 * 1024

_MAX_SIZE: Final = 2**63 - 1  # off_t
_TIME_RECORD: Final = re.compile(rb"T(\d{1,20}) (\d{1,6}) (\d{1,20}) (\d{1,6})")
_ENTRY_RECORD: Final = re.compile(rb"([CD])[0-7]{4} (\d{1,20}) (.*)", re.DOTALL)
# Options of OpenSSH scp that take an argument (scp.c getopt string).
_OPTIONS_WITH_ARGUMENT: Final = frozenset("cDFiJloPSX")
_SHELL_OPERATOR_CHARS: Final = frozenset("();<>|&")


class ScpAuditError(Exception):
    """The channel cannot be followed as the scp protocol; stop auditing it.

    ``events`` holds events decoded by the same call before the error.
    """

    def __init__(self, message: str, events: list[FileEvent] | None = None) -> None:
        super().__init__(message)
        self.events: list[FileEvent] = events if events is not None else []


@dataclass(frozen=True, slots=True)
class ScpCommand:
    """A recognised server-side scp invocation.

    ``direction`` is ``"upload"`` for ``scp -t`` (files flow to the target) and
    ``"download"`` for ``scp -f``; ``paths`` are the operands as written, before
    the target's shell expands globs or variables in them.
    """

    direction: str
    paths: tuple[str, ...]
    recursive: bool


def parse_scp_command(command: str) -> ScpCommand | None:
    """Recognise an exec request that runs legacy scp in sink or source mode.

    Tolerates OpenSSH's own forms (``scp -t -- /tmp/x``, ``scp -r -d -t /tmp``,
    ``scp -p -f file``, bundled ``-rpt``, ``/usr/bin/scp``).  Returns None when the
    command is not scp, has neither or both of ``-t``/``-f``, or would make the
    shell run anything besides scp (``;``, ``&&``, pipes, redirections, newlines,
    command substitution), so such commands are never audited as plain transfers.
    Never raises.
    """
    if "\n" in command or "\r" in command or "`" in command:
        return None
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        argv = list(lexer)
    except ValueError:  # unbalanced quotes
        return None
    if not argv or posixpath.basename(argv[0]) != "scp":
        return None
    if any(token and set(token) <= _SHELL_OPERATOR_CHARS for token in argv):
        return None
    sink = source = recursive = False
    operands: list[str] = []
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":
            operands.extend(args)
            break
        if not arg.startswith("-") or arg == "-":
            operands.append(arg)  # GNU-style permutation: options may follow operands
            continue
        for index, letter in enumerate(arg[1:], start=1):
            if letter in _OPTIONS_WITH_ARGUMENT:
                if index == len(arg) - 1:
                    next(args, None)
                break
            sink |= letter == "t"
            source |= letter == "f"
            recursive |= letter == "r"
    if sink == source:
        return None
    return ScpCommand("upload" if sink else "download", tuple(operands), recursive)


@dataclass(slots=True)
class _Awaiting:
    """A sender record (or finished file) waiting for the sink's one response."""

    kind: str  # start, time, file, dir, end, done
    path: str = ""
    name: str = ""
    size: int = 0
    source_error: str = ""


class ScpAuditor:
    """Sans-IO observer of one legacy scp channel; reports each file transferred.

    ``direction`` is the :attr:`ScpCommand.direction` of the channel's command:
    for ``"upload"`` the client is the source, for ``"download"`` the server is.
    Each file becomes ``FileEvent(direction, path, size, ok)`` once the sink has
    answered its data (``ok`` needs both sides to report success); refused files
    and error messages become events with ``ok=False`` and the message as detail
    (``path`` is ``""`` when a message names no record).  After an
    :class:`ScpAuditError` further feeds raise again.
    """

    def __init__(
        self,
        direction: str,
        *,
        max_line: int = DEFAULT_MAX_LINE,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_ahead: int = DEFAULT_MAX_AHEAD,
    ) -> None:
        if direction not in ("upload", "download"):
            raise ValueError(f"direction must be 'upload' or 'download', not {direction!r}")
        self._direction = direction
        self._max_line = max_line
        self._max_depth = max_depth
        self._max_ahead = max_ahead
        self._sent = bytearray()  # from the source: records and file data
        self._answers = bytearray()  # from the sink: responses
        self._awaiting: _Awaiting | None = _Awaiting("start")
        self._dirs: list[str] = []
        self._file: _Awaiting | None = None  # the file whose data is streaming
        self._remaining = 0  # data bytes still to skip for _file
        self._stopped: str | None = None

    def client_data(self, data: bytes) -> list[FileEvent]:
        """Observe client-to-server bytes.  Raises ScpAuditError if they cannot be followed."""
        return self._feed(data, from_source=self._direction == "upload")

    def server_data(self, data: bytes) -> list[FileEvent]:
        """Observe server-to-client bytes.  Raises ScpAuditError if they cannot be followed."""
        return self._feed(data, from_source=self._direction == "download")

    def close(self) -> list[FileEvent]:
        """The channel ended: report a file cut off mid-transfer as ``detail="unclosed"``.

        Never raises; the auditor accepts no more data afterwards.
        """
        events: list[FileEvent] = []
        current = self._file
        if current is not None:
            moved = current.size - self._remaining
            events.append(FileEvent(self._direction, current.path, moved, False, "unclosed"))
        elif self._awaiting is not None and self._awaiting.kind in ("file", "done"):
            awaiting = self._awaiting
            moved = awaiting.size if awaiting.kind == "done" else 0
            detail = "; ".join(x for x in (awaiting.source_error, "unclosed") if x)
            events.append(FileEvent(self._direction, awaiting.path, moved, False, detail))
        self._file = None
        self._awaiting = None
        if self._stopped is None:
            self._stopped = "the channel was closed"
        return events

    # -- plumbing -----------------------------------------------------------------

    def _feed(self, data: bytes, *, from_source: bool) -> list[FileEvent]:
        if self._stopped is not None:
            raise ScpAuditError(f"auditing stopped: {self._stopped}")
        events: list[FileEvent] = []
        try:
            if from_source:
                self._sent += data
            else:
                self._answers += data
            self._pump(events)
            if len(self._sent) > self._max_ahead:
                raise ScpAuditError(
                    f"source sent {len(self._sent)} bytes ahead of the sink's response"
                )
            if len(self._answers) > self._max_ahead:
                raise ScpAuditError(f"sink sent {len(self._answers)} unsolicited bytes")
        except ScpAuditError as exc:
            self._stopped = str(exc)
            exc.events = events + exc.events
            raise
        except Exception as exc:  # a bug here must never take the relay down
            self._stopped = f"internal error: {exc!r}"
            raise ScpAuditError(self._stopped, events) from exc
        return events

    def _pump(self, events: list[FileEvent]) -> None:
        """Advance as far as both buffers allow, strictly in protocol order."""
        while True:
            if self._awaiting is not None:
                answer = self._take_answer()
                if answer is None:
                    return
                self._on_answer(self._awaiting, *answer, events)
            elif not self._step_source(events):
                return

    def _take_line(self, buf: bytearray, what: str, start: int = 0) -> bytes | None:
        end = buf.find(b"\n", start, self._max_line)
        if end < 0:
            if len(buf) >= self._max_line:
                raise ScpAuditError(f"{what} longer than {self._max_line} bytes")
            return None
        line = bytes(buf[:end])
        del buf[: end + 1]
        return line

    def _take_answer(self) -> tuple[bool, str] | None:
        """One sink response: (True, "") for \\0, else (False, message)."""
        if not self._answers:
            return None
        if self._answers[0] == 0:
            del self._answers[:1]
            return True, ""
        return self._take_error(self._answers, "sink response")

    def _take_error(self, buf: bytearray, what: str) -> tuple[bool, str] | None:
        """A non-zero response, as OpenSSH's response() reads it, or None if incomplete.

        The first byte is the code; the message runs to the next newline after it.
        \\1 and \\2 introduce a message; any other byte is the message's first character.
        """
        line = self._take_line(buf, what, start=1)
        if line is None:
            return None
        return False, _message(line[1:] if line[0] in (1, 2) else line)

    # -- the source's stream --------------------------------------------------------

    def _step_source(self, events: list[FileEvent]) -> bool:
        """Consume one record, a run of file data or a status byte; False if starved."""
        buf = self._sent
        if not buf:
            return False
        if self._file is not None:
            if self._remaining:
                taken = min(self._remaining, len(buf))
                del buf[:taken]
                self._remaining -= taken
                return True
            if buf[0] == 0:
                del buf[:1]
                error = ""
            else:
                answer = self._take_error(buf, "status message")
                if answer is None:
                    return False
                error = answer[1]
            done = self._file
            done.kind, done.source_error = "done", error
            self._file, self._awaiting = None, done
            return True
        line = self._take_line(buf, "control record")
        if line is None:
            return False
        self._on_record(line, events)
        return True

    def _on_record(self, line: bytes, events: list[FileEvent]) -> None:
        if not line:
            raise ScpAuditError("empty control record")
        kind = line[:1]
        if kind in (b"\x01", b"\x02"):
            # The source reports a file it could not send; the sink does not answer.
            events.append(FileEvent(self._direction, "", 0, False, _message(line[1:])))
        elif kind == b"E":
            self._awaiting = _Awaiting("end")
        elif kind == b"T":
            if _TIME_RECORD.fullmatch(line) is None:
                raise ScpAuditError(f"malformed T record {_show(line)}")
            self._awaiting = _Awaiting("time")
        elif kind in (b"C", b"D"):
            match = _ENTRY_RECORD.fullmatch(line)
            if match is None:
                raise ScpAuditError(f"malformed {kind.decode()} record {_show(line)}")
            size = int(match.group(2))
            if size > _MAX_SIZE:
                raise ScpAuditError(f"file size {size} out of range")
            name = decode_path(match.group(3))
            path = "/".join([*self._dirs, name])
            self._awaiting = _Awaiting("file" if kind == b"C" else "dir", path, name, size)
        else:
            raise ScpAuditError(f"expected a control record, got {_show(line)}")

    def _on_answer(
        self, awaiting: _Awaiting, ok: bool, message: str, events: list[FileEvent]
    ) -> None:
        self._awaiting = None
        direction = self._direction
        kind = awaiting.kind
        if kind == "file":
            if ok:
                self._file, self._remaining = awaiting, awaiting.size
            else:
                events.append(FileEvent(direction, awaiting.path, 0, False, message))
        elif kind == "done":
            detail = "; ".join(x for x in (awaiting.source_error, message) if x)
            ok = ok and not awaiting.source_error
            events.append(FileEvent(direction, awaiting.path, awaiting.size, ok, detail))
        elif kind == "dir":
            if ok:
                if len(self._dirs) >= self._max_depth:
                    raise ScpAuditError(f"directories nested deeper than {self._max_depth}")
                self._dirs.append(awaiting.name)
            else:
                detail = f"directory refused: {message}"
                events.append(FileEvent(direction, awaiting.path, 0, False, detail))
        elif kind == "end":
            if self._dirs:
                self._dirs.pop()
        elif not ok:  # start or time: the sink refused before any file was named
            events.append(FileEvent(direction, "", 0, False, message))


def _message(raw: bytes) -> str:
    return decode_path(raw[:1024]).strip()


def _show(line: bytes) -> str:
    return repr(line[:64])
