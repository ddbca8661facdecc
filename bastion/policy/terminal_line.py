"""The command line a contractor is typing in a terminal, rebuilt for guardrails.

Sans-IO: the relay hands ``LineTracker`` the contractor's input and the target's
output, in the order it relays them, and gets back what to forward now and where
a line was submitted. No sockets, no clock.

Why the echo and not the keystrokes: what runs is what the shell shows, after tab
completion, history recall (Up, Ctrl-R) and editing in the middle of the line;
the keystrokes of ``r<TAB>`` or ``<Up>`` say nothing. The input only tells where
Enter was pressed (and Ctrl-C, Ctrl-U, pastes). So the tracker keeps the text of
the terminal's *current line* (what follows the last newline of the output) and,
when Enter comes, renders it with a minimal line model (printable text, CR, BS,
cursor left/right, erase and insert/delete characters: what readline, libedit and
zle use to redraw a line) and removes the prompt (the part of the line left of
the cursor when the first key of the line was typed).

Cost: output is only scanned with ``bytes.rfind`` / ``bytes.find`` (C speed); the
current line is kept as raw bytes and rendered only at the first key of a line and
at Enter. Input is searched with one compiled regex per chunk.

Full-screen programs (``vim``, ``less``, ``top``) switch to the alternate screen
(``ESC[?1049h``, ``?1047h``, ``?47h``); lines typed there are not lines of a
shell, so nothing is judged (``Unchecked`` tells the relay, which reports it).
Leaving the alternate screen, Ctrl-C and Ctrl-U reset the line.

Bracketed paste (``ESC[200~ … ESC[201~``): the pasted text is literal, so every
line of it is judged from the input itself, before any of it is forwarded.

Honest limits: a line longer than the terminal is wide, text the shell prints
without echoing (``stty -echo``), or a program that draws its own line without
the alternate screen can defeat this. It catches mistakes and casual misuse, not
a determined adversary with a shell; exec requests are judged exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_LINE_BYTES = 16 * 1024
"""The current line's raw output kept; beyond it only what follows its last CR is kept."""

MAX_PASTE_BYTES = 1024 * 1024
"""A bracketed paste longer than this is judged as ``PasteTooLong`` (refused)."""

PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"
INTERRUPT = b"\x03"
"""What the relay sends the target instead of a refused Enter: the shell drops the line."""

_INPUT_STOP = re.compile(rb"[\r\n\x03\x15]|\x1b\[200~")
_ALT_SCREEN = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
_ALT_TAIL = 8  # bytes kept between output chunks so a split ESC[?1049h is still found
_PRINTABLE = re.compile(rb"[^\x00-\x1f\x7f]")

# One token of terminal output: CSI sequence, other escape, control char, or a text run.
_TOKENS = re.compile(
    r"\x1b\[([0-9;?>=]*)[ -/]*([@-~])"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[^\[\]]?"
    r"|([\x00-\x1f\x7f])"
    r"|([^\x00-\x1f\x7f\x1b]+)"
)


@dataclass(frozen=True)
class Enter:
    """The contractor pressed Enter: judge ``LineTracker.line()``, then forward ``key``."""

    key: bytes


@dataclass(frozen=True)
class Paste:
    """A bracketed paste: judge every line of ``lines``, then forward ``raw``.

    The first line includes what was already typed on the shell's line.
    """

    raw: bytes
    lines: tuple[str, ...]


@dataclass(frozen=True)
class PasteTooLong:
    """A bracketed paste longer than ``MAX_PASTE_BYTES``: refused unjudged."""

    size: int


@dataclass(frozen=True)
class Unchecked:
    """Enter (or a paste) while a full-screen program runs: forwarded, not judged."""

    key: bytes


Submit = Enter | Paste | PasteTooLong | Unchecked


def _param(params: str) -> int:
    try:
        n = int(params.split(";", 1)[0] or "1")
    except ValueError:
        return 1
    return max(n, 1)


def _csi(cells: list[str], col: int, params: str, final: str) -> int:
    """Apply one cursor or erase sequence to the line; the new cursor column."""
    n = _param(params)
    if final == "C":
        return col + n
    if final == "D":
        return max(col - n, 0)
    if final == "G":
        return n - 1
    if final == "K":
        mode = params or "0"
        if mode == "0":
            del cells[col:]
        elif mode == "1":
            upto = min(col + 1, len(cells))
            cells[:upto] = " " * upto
        else:
            cells.clear()
    elif final == "P":
        del cells[col : col + n]
    elif final == "@" and col <= len(cells):
        cells[col:col] = " " * n
    elif final == "X":
        end = min(col + n, len(cells))
        cells[col:end] = " " * max(end - col, 0)
    return col


def render(raw: bytes) -> tuple[str, int]:
    """The text of one terminal line after ``raw`` was written to it, and the cursor column.

    A minimal model of one line: enough for a shell's line editor redrawing its
    line, not a terminal (colours and modes are dropped, wide characters count as
    one column).
    """
    cells: list[str] = []
    col = 0
    for m in _TOKENS.finditer(raw.decode("utf-8", "replace")):
        params, final, ctrl, text = m.groups()
        if text is not None:
            if col > len(cells):
                cells.extend(" " * (col - len(cells)))
            cells[col : col + len(text)] = text
            col += len(text)
        elif ctrl == "\r":
            col = 0
        elif ctrl == "\b":
            col = max(col - 1, 0)
        elif ctrl == "\t":
            col = (col // 8 + 1) * 8
        elif final is not None and not params.startswith("?"):
            col = _csi(cells, col, params, final)
    return "".join(cells), col


@dataclass
class LineTracker:
    """The current terminal line and where Enter was pressed (see the module docstring)."""

    alternate: bool = False
    """A full-screen program is on the alternate screen."""
    echo_pending: bool = False
    """Input was forwarded and no output came back since (the echo may still be on its way)."""
    _tail: bytearray = field(default_factory=bytearray)
    _alt_tail: bytes = b""
    _prompt: str | None = None
    _last_prompt: str = ""
    _paste: bytearray | None = None
    _fresh: bool = False
    """Output came since the last submit or reset (so the line shows the new prompt)."""

    # --- output ------------------------------------------------------------------------

    def output(self, data: bytes) -> None:
        """Target output (its echo among it)."""
        self.echo_pending = False
        if self._alt_tail or b"\x1b[?" in data or b"\x1b" in data[-_ALT_TAIL:]:
            self._scan_alternate(data)
        self._fresh = True
        nl = data.rfind(b"\n")
        if nl >= 0:
            self._tail[:] = data[nl + 1 :]
        else:
            self._tail += data
        if len(self._tail) > MAX_LINE_BYTES:
            cr = self._tail.rfind(b"\r")
            keep = self._tail[cr + 1 :] if cr >= 0 else b""
            self._tail[:] = keep[-MAX_LINE_BYTES:]

    def _scan_alternate(self, data: bytes) -> None:
        seen = self._alt_tail + data
        last, end = None, 0
        for m in _ALT_SCREEN.finditer(seen):
            last, end = m.group(1), m.end()
        # keep a possibly cut sequence at the end for the next chunk (never a found one)
        esc = seen.rfind(b"\x1b", max(len(seen) - _ALT_TAIL, end))
        self._alt_tail = seen[esc:] if esc >= 0 else b""
        if last is None:
            return
        if last == b"l" and self.alternate:
            self.reset()
        self.alternate = last == b"h"

    # --- input -------------------------------------------------------------------------

    def input(self, data: bytes) -> tuple[bytes, Submit | None, bytes]:
        """Contractor input: (forward now, the submit point if any, the rest not yet read).

        The relay forwards the first part, then (for a submit point) holds the rest
        until it has judged, and feeds it again afterwards.
        """
        if self._paste is not None:
            return self._in_paste(data)
        m = _INPUT_STOP.search(data)
        if m is None:
            self._typed(data)
            return data, None, b""
        head, stop, rest = data[: m.start()], m.group(), data[m.end() :]
        self._typed(head)
        if stop == PASTE_START:
            self._snapshot()
            self._paste = bytearray()
            forward, submit, rest = self._in_paste(rest)
            return head + forward, submit, rest
        if stop in (b"\x03", b"\x15"):
            self.reset()
            more, submit, rest = self.input(rest) if rest else (b"", None, b"")
            return head + stop + more, submit, rest
        if self.alternate:
            return head, Unchecked(stop), rest
        return head, Enter(stop), rest

    def _in_paste(self, data: bytes) -> tuple[bytes, Submit | None, bytes]:
        paste = self._paste
        assert paste is not None  # noqa: S101  only called inside a paste
        start = max(len(paste) - len(PASTE_END) + 1, 0)  # the end marker may be cut
        paste += data
        end = paste.find(PASTE_END, start)
        if end < 0:
            if len(paste) > MAX_PASTE_BYTES:
                self._paste = None
                return b"", PasteTooLong(len(paste)), b""
            return b"", None, b""
        rest = bytes(paste[end + len(PASTE_END) :])
        del paste[end:]
        self._paste = None
        raw = PASTE_START + bytes(paste) + PASTE_END
        if self.alternate:
            return b"", Unchecked(raw), rest
        text = bytes(paste).decode("utf-8", "replace").replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines[0] = self._command(strip=False) + lines[0]
        return b"", Paste(raw, tuple(line for line in lines if line.strip())), rest

    def _snapshot(self) -> None:
        """The first key of a line: what is left of the cursor now is the prompt."""
        if self._prompt is not None:
            return
        if not self._fresh:  # typed ahead: the new prompt is not there yet
            self._prompt = ""
            return
        text, col = render(bytes(self._tail))
        self._prompt = text[:col]
        if self._prompt.strip():
            self._last_prompt = self._prompt

    def _typed(self, data: bytes) -> None:
        if not data:
            return
        self._snapshot()
        if _PRINTABLE.search(data) is not None:
            self.echo_pending = True

    # --- what the relay asks -------------------------------------------------------------

    @property
    def in_paste(self) -> bool:
        """A bracketed paste started and its end has not come yet (its bytes are held)."""
        return self._paste is not None

    def line(self) -> str:
        """The command on the current line as the terminal shows it, prompt removed."""
        return self._command(strip=True)

    def _command(self, strip: bool) -> str:
        text, _col = render(bytes(self._tail))
        for prompt in (self._prompt, self._last_prompt):
            if prompt and text.startswith(prompt):
                text = text[len(prompt) :]
                break
        return text.strip() if strip else text.lstrip()

    def submitted(self) -> None:
        """The Enter was forwarded: the next key starts a new line."""
        self.reset()

    def reset(self) -> None:
        """Ctrl-C, Ctrl-U, a refused line or leaving a full-screen program: a new line."""
        self._prompt = None
        self._fresh = False
