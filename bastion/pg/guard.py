"""SQL guardrails in the relay: each Query and Parse is judged before it is forwarded.

Two sans-IO pieces, one per direction.

``StatementGate`` (client to target) frames the client's bytes and passes whole
messages on; a Query or Parse whose text is not known to be allowed stops the
flow until the session core has judged it (the relay pauses reading meanwhile),
and nothing after it moves before the decision. Incomplete messages are never
forwarded, so no part of a statement reaches the target before its judgment.
Each message is framed once: the gate checks every header against the client
scanner's bounds (``relay_scan.frontend_bounds``) and hands the scanner its
frames with the bytes (``ClientScanner.scan``), so the relay does not split the
same bytes a second time.

A denied statement is *replaced*, not dropped: the target receives a statement of
the bastion's own that fails (``SELECT "bastion_denied_<token>"``: the column
does not exist). PostgreSQL itself then does what it would have done with any
failing statement: it aborts the transaction block if one is open (the client
sees ``E`` in ReadyForQuery, and a later COMMIT answers ROLLBACK), rolls back the
implicit transaction of a multi-statement Query or of an extended-protocol
segment, skips the rest of the segment up to Sync, and answers ReadyForQuery
with the true status. A denied Parse's following messages up to Sync are
dropped here as well, so they never reach the target.

``ErrorSwap`` (target to client) puts the bastion's ErrorResponse (SQLSTATE
42501, naming the rule) in place of the target's error for that token. In a
transaction that had already failed the target answers 25P02 (commands ignored)
before looking at the text; that error is passed on as PostgreSQL would give it.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from bastion.pg.encoding import encode
from bastion.pg.messages import ErrorResponse
from bastion.pg.relay_scan import BAD, Frame, frontend_bounds

_HEADER: Final = struct.Struct("!Bi")
_Q, _P, _S, _F, _X = (ord(c) for c in "QPSFX")
_ERROR, _READY = ord("E"), ord("Z")
DENIED_MARK: Final = b"bastion_denied_"
"""Prefix of the column the replacement statement names; the token follows."""
_TOKEN_LEN: Final = 32
INSUFFICIENT_PRIVILEGE: Final = "42501"

_NEVER: Final = (1, 0)  # the bounds of an unknown type: no size fits

Piece = tuple[bytes, list[Frame], bytes]
"""(a buffer, the frames of it for ``ClientScanner.scan``, the bytes for the target)."""


@dataclass(frozen=True)
class Pending:
    """A statement waiting for the session core's judgment (at the gate's head)."""

    type_byte: int
    name: str
    sql: str
    frame: bytes


def _cstr(body: bytes, pos: int) -> tuple[str, int] | None:
    nul = body.find(b"\x00", pos)
    if nul < 0:
        return None
    return body[pos:nul].decode("utf-8", "surrogateescape"), nul + 1


def _statement(type_byte: int, body: bytes) -> tuple[str, str] | None:
    """(statement name, SQL) of a Query or Parse body; None if malformed (the scanner refuses)."""
    if type_byte == _Q:
        if not body or body[-1] != 0:
            return None
        return "", body[:-1].decode("utf-8", "surrogateescape")
    name = _cstr(body, 0)
    if name is None:
        return None
    sql = _cstr(body, name[1])
    return None if sql is None else (name[0], sql[0])


def _frame(type_byte: int, body: bytes) -> bytes:
    return _HEADER.pack(type_byte, len(body) + 4) + body


def replacement(type_byte: int, name: str, token: str) -> bytes:
    """The failing statement sent in place of a denied Query or Parse."""
    sql = f'SELECT "{DENIED_MARK.decode()}{token}"'.encode()
    if type_byte == _Q:
        return _frame(_Q, sql + b"\x00")
    return _frame(_P, name.encode("utf-8", "surrogateescape") + b"\x00" + sql + b"\x00\x00\x00")


def denial_error(message: str, detail: str) -> bytes:
    """The ErrorResponse the client sees for a denied statement."""
    fields = {"S": "ERROR", "V": "ERROR", "C": INSUFFICIENT_PRIVILEGE, "M": message}
    if detail:
        fields["D"] = detail
    return encode(ErrorResponse(fields))


class StatementGate:
    """Client bytes in, whole judged messages out."""

    def __init__(self, max_message_length: int) -> None:
        self._bounds = frontend_bounds(max_message_length)
        self._buf = bytearray()  # the start of an incomplete message, or what waits
        self._need = 5  # the buffer's length at which the next pump can move something
        self.waiting: Pending | None = None
        """The statement being judged; everything after it waits in the buffer."""
        self.discarding = False
        """After a denied Parse: drop messages up to Sync."""
        self.syncs = 0
        """Query, Sync and FunctionCall messages sent to the target (one ReadyForQuery each)."""

    @property
    def buffered(self) -> int:
        """Bytes held: an incomplete message, or what waits behind a statement being judged."""
        return len(self._buf)

    def feed(
        self, data: bytes, allowed: Callable[[str], bool]
    ) -> tuple[list[Piece], Pending | None]:
        """Take ``data``; return what may go now and the statement to judge, if any."""
        if not self._buf and self.waiting is None:
            return self._pump(data, allowed)
        self._buf += data  # a large message arrives in many reads: appended, split once
        if self.waiting is not None or len(self._buf) < self._need:
            return [], None
        return self.pump(allowed)

    def pump(self, allowed: Callable[[str], bool]) -> tuple[list[Piece], Pending | None]:
        """Forward whole messages until one needs a judgment (``allowed`` says it does not)."""
        src, self._buf = bytes(self._buf), bytearray()
        return self._pump(src, allowed)

    def _pump(  # noqa: C901  one branch per message type
        self, src: bytes, allowed: Callable[[str], bool]
    ) -> tuple[list[Piece], Pending | None]:
        out: list[Piece] = []
        frames: list[Frame] = []
        bounds = self._bounds
        unpack = _HEADER.unpack_from
        pos = run = 0
        size = len(src)
        while size - pos >= 5:
            type_byte, length = unpack(src, pos)
            low, high = bounds.get(type_byte, _NEVER)
            if not low <= length - 4 <= high:  # the scanner names the violation
                frames.append((type_byte | BAD, length, pos))
                out.append((src, frames, src[run:]))
                self._need = 5
                return out, None
            end = pos + 1 + length
            if end > size:
                break
            if self.discarding:
                if type_byte == _S:
                    self.discarding = False
                    self.syncs += 1
                elif type_byte != _X:  # everything else of the denied segment stays here
                    if run < pos:
                        out.append((src, frames, src[run:pos]))
                        frames = []
                    pos = run = end
                    continue
            elif type_byte == _Q or type_byte == _P:
                found = _statement(type_byte, src[pos + 5 : end])
                if found is not None and not allowed(found[1]):
                    if run < pos:
                        out.append((src, frames, src[run:pos]))
                    self._buf = bytearray(src[pos:])
                    self.waiting = Pending(type_byte, found[0], found[1], src[pos:end])
                    return out, self.waiting
                if type_byte == _Q:
                    self.syncs += 1
            elif type_byte == _S or type_byte == _F:
                self.syncs += 1
            frames.append((type_byte, pos + 5, end))
            pos = end
        if run < pos:
            chunk = src if run == 0 and pos == size else src[run:pos]
            out.append((src, frames, chunk))
        if pos < size:
            self._buf = bytearray(src[pos:])
            rest = size - pos
            self._need = 1 + unpack(src, pos)[1] if rest >= 5 else 5
        else:
            self._need = 5
        return out, None

    def decided(self, token: str | None) -> tuple[Piece, int]:
        """The judged statement leaves the head: as it is (``token`` None) or replaced.

        Returns its piece and the number of the ReadyForQuery that ends its segment.
        """
        pending = self.waiting
        assert pending is not None  # noqa: S101  only after feed/pump returned it
        self.waiting = None
        del self._buf[: len(pending.frame)]
        self._need = 5
        sent = pending.frame
        if token is not None:
            sent = replacement(pending.type_byte, pending.name, token)
            if pending.type_byte == _P:
                self.discarding = True
        frame = pending.frame
        piece = (frame, [(pending.type_byte, 5, len(frame))], sent)
        if pending.type_byte == _Q:
            self.syncs += 1
            return piece, self.syncs
        return piece, self.syncs + 1


class ErrorSwap:
    """Target bytes in, the same bytes out with the bastion's error for each denial token.

    Active while a denial is outstanding: it then passes whole messages only (the
    first may have started before, see ``start``), and compares the ReadyForQuery
    count with each denial's segment to forget tokens the target never used.
    """

    def __init__(self, max_message_length: int) -> None:
        self._max = max_message_length
        self._tail = bytearray()
        self._need = 5
        self._skip = 0
        self._ready = 0
        self._expect: dict[bytes, tuple[bytes, int]] = {}

    @property
    def active(self) -> bool:
        """Denials outstanding or a message still held."""
        return bool(self._expect) or bool(self._tail)

    def expect(
        self, in_flight: bytes, ready_seen: int, token: str, error: bytes, ready: int
    ) -> None:
        """A denial was sent; ``in_flight``: the start of a target message already relayed."""
        if not self.active:
            self._tail, self._skip, self._ready = bytearray(in_flight), len(in_flight), ready_seen
            self._need = 5
        self._expect[token.encode()] = (error, ready)

    def feed(self, data: bytes) -> bytes:
        """The bytes to relay now (whole messages, swapped where a token is named)."""
        if self._tail:
            self._tail += data  # a large message in many reads: appended, split once
            if len(self._tail) < self._need:
                return b""
            src = bytes(self._tail)
        else:
            src = data
        out = bytearray()
        pos, size = 0, len(src)
        while size - pos >= 5:
            type_byte, length = _HEADER.unpack_from(src, pos)
            if not 4 <= length <= self._max + 4:  # the scanner names the violation
                out += src[pos:]
                pos = size
                self._expect.clear()
                break
            end = pos + 1 + length
            if end > size:
                break
            if type_byte == _ERROR and self._expect:
                at = src.find(DENIED_MARK, pos + 5, end)
                if at >= 0:
                    key = src[at + len(DENIED_MARK) : at + len(DENIED_MARK) + _TOKEN_LEN]
                    hit = self._expect.pop(key, None)
                    if hit is not None:
                        out += hit[0]
                        pos = end
                        continue
            elif type_byte == _READY:
                self._ready += 1
                done = [k for k, (_, n) in self._expect.items() if n <= self._ready]
                for k in done:
                    del self._expect[k]
            out += src[pos:end]
            pos = end
        self._tail = bytearray(src[pos:])
        rest = size - pos
        self._need = 1 + _HEADER.unpack_from(src, pos)[1] if rest >= 5 else 5
        if self._skip and len(out) >= self._skip:
            del out[: self._skip]
            self._skip = 0
        return bytes(out)
