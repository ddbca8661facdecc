"""The command line a contractor is typing in a terminal, rebuilt for guardrails.

Sans-IO: the relay hands ``LineTracker`` the contractor's input and the target's
output, in the order it relays them, and gets back what to forward now and where
a line was submitted. No sockets, no clock.

Why the echo and not the keystrokes: what runs is what the shell shows, after tab
completion, history recall (Up, Ctrl-R) and editing in the middle of the line;
the keystrokes of ``r<TAB>`` or ``<Up>`` say nothing. The input only tells where
Enter was pressed (and Ctrl-C, Ctrl-U, pastes). So the tracker keeps the raw
output of the terminal's *current line* (between lines: what follows the last
newline; while a line is typed: all of it, since redraws of a wrapped line move
up and down) and, when Enter comes, renders it with a minimal model of one
wrapped line (printable text, CR, BS, cursor moves, erase and insert/delete
characters: what readline, libedit and zle use to redraw a line) and removes the
prompt (what was left of the cursor when the first key of the line was typed, or
the last prompt seen, for keys typed ahead of it).

Cost: output is only scanned with ``bytes.rfind`` / ``bytes.find`` (C speed); the
current line is kept as raw bytes and rendered only at the first key of a line and
at Enter. Input is searched with one compiled regex per chunk.

Full-screen programs (``vim``, ``less``, ``top``) switch to the alternate screen
(``ESC[?1049h``, ``?1047h``, ``?47h``); lines typed there are not lines of a
shell, so nothing is judged (``Unchecked`` tells the relay, which reports it).
Leaving the alternate screen, Ctrl-C and Ctrl-U reset the line.

Bracketed paste (``ESC[200~ … ESC[201~``): the pasted text is literal, so every
line of it is judged from the input itself, before any of it is forwarded.

Honest limits: a long line typed ahead of its prompt (the tty echoes it before
the prompt, so wrapping is off), a terminal width the bastion was not told, input
without echo (``stty -echo``), or a program that draws its own line without the
alternate screen can defeat this. It catches mistakes and casual misuse, not
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
INTERRUPT = b"\x05\x15\x03"
"""What the relay sends the target instead of a refused Enter: Ctrl-E Ctrl-U (to the end,
kill the line: line editors and the tty's own line discipline drop it at once) and
Ctrl-C (a new prompt; bash may act on the signal only after keys it already read)."""

_INPUT_STOP = re.compile(rb"[\r\n\x03\x15]|\x1b\[200~")
_ALT_SCREEN = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
_EDITOR = re.compile(rb"\x1b\[\?2004([hl])")
"""Bracketed paste switched on (a line editor reads a line: bash, zsh, fish) or off."""
_ALT_TAIL = 8  # bytes kept between output chunks so a split ESC[?1049h is still found
_PRINTABLE = re.compile(rb"[^\x00-\x1f\x7f]")
_PLAIN = re.compile(rb"[ -~]+")
_RECENT = 16  # typed characters looked for in the echo

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


class _Screen:
    """Rows of one logical line on a terminal ``width`` columns wide (it wraps)."""

    def __init__(self, width: int) -> None:
        self.width = max(width, 2)
        self.rows: list[list[str]] = [[]]
        self.row = 0
        self.col = 0  # == width: at the right margin, the wrap still pending

    def _cells(self) -> list[str]:
        while len(self.rows) <= self.row:
            self.rows.append([])
        return self.rows[self.row]

    def text(self, run: str) -> None:
        w = self.width
        while run:
            if self.col >= w:
                self.row, self.col = self.row + 1, 0
            cells = self._cells()
            if self.col > len(cells):
                cells.extend(" " * (self.col - len(cells)))
            piece = run[: w - self.col]
            cells[self.col : self.col + len(piece)] = piece
            self.col += len(piece)
            run = run[len(piece) :]

    def control(self, ctrl: str) -> None:
        if ctrl == "\r":
            self.col = 0
        elif ctrl == "\n":
            self.row += 1
        elif ctrl == "\b":
            self.col = max(min(self.col, self.width - 1) - 1, 0)
        elif ctrl == "\t":
            self.col = min((self.col // 8 + 1) * 8, self.width - 1)

    def csi(self, params: str, final: str) -> None:
        """One cursor or erase sequence."""
        n = _param(params)
        col = min(self.col, self.width - 1)
        if final in "ABCDG":
            if final == "A":
                self.row = max(self.row - n, 0)
            elif final == "B":
                self.row += n
            elif final == "C":
                self.col = min(col + n, self.width - 1)
            elif final == "D":
                self.col = max(col - n, 0)
            else:
                self.col = min(n - 1, self.width - 1)
            return
        self._edit(self._cells(), col, params, final, n)

    def _edit(self, cells: list[str], col: int, params: str, final: str, n: int) -> None:
        """Erase, delete or insert characters on the cursor's row."""
        if final == "K":
            mode = params or "0"
            if mode == "0":
                del cells[col:]
            elif mode == "1":
                upto = min(col + 1, len(cells))
                cells[:upto] = " " * upto
            else:
                cells.clear()
        elif final == "J" and (params or "0") == "0":
            del cells[col:]
            del self.rows[self.row + 1 :]
        elif final == "P":
            del cells[col : col + n]
        elif final == "@" and col <= len(cells):
            cells[col:col] = " " * n
            del cells[self.width :]
        elif final == "X":
            end = min(col + n, len(cells))
            cells[col:end] = " " * max(end - col, 0)

    def line(self) -> tuple[str, int]:
        """The rows joined (full rows are wrapped text), and the cursor's index in it."""
        w = self.width
        rows = self.rows
        last = len(rows) - 1
        while last > self.row and not rows[last]:
            last -= 1
        text = "".join(
            "".join(r).ljust(w) if i < last else "".join(r) for i, r in enumerate(rows[: last + 1])
        )
        return text, self.row * w + min(self.col, w)


def render(raw: bytes, width: int = 80) -> tuple[str, int]:
    """The text of one logical terminal line after ``raw`` was written, and the cursor index.

    A minimal model: enough for a shell's line editor drawing and redrawing its
    line (wrapped at ``width``), not a terminal (colours and modes are dropped,
    wide characters count as one column).
    """
    screen = _Screen(width)
    for m in _TOKENS.finditer(raw.decode("utf-8", "replace")):
        params, final, ctrl, text = m.groups()
        if text is not None:
            screen.text(text)
        elif ctrl is not None:
            screen.control(ctrl)
        elif final is not None and not params.startswith("?"):
            screen.csi(params, final)
    return screen.line()


@dataclass
class LineTracker:
    """The current terminal line and where Enter was pressed (see the module docstring)."""

    width: int = 80
    """The terminal's columns (the relay updates it on resize): long lines wrap."""
    alternate: bool = False
    """A full-screen program is on the alternate screen."""
    editing: bool = False
    """The shell's line editor reads the line (it switched bracketed paste on): it echoes."""
    _echo_pending: bool = False
    _recent: bytes = b""
    """The last plain characters typed (no editing key since): the echo must show them."""
    _tail: bytearray = field(default_factory=bytearray)
    _alt_tail: bytes = b""
    _prompt: str | None = None
    """Left of the cursor at the first key of the line; "" when typed ahead of the prompt."""
    _last_prompt: str = ""
    _paste: bytearray | None = None
    _fresh: bool = False
    """The output reached the line being typed (after Enter or Ctrl-C: a newline came)."""

    # --- output ------------------------------------------------------------------------

    def output(self, data: bytes) -> None:
        """Target output (its echo among it)."""
        self._echo_pending = False
        if self._alt_tail or b"\x1b[?" in data or b"\x1b" in data[-_ALT_TAIL:]:
            left = self._scan_alternate(data)
            if left is not None:  # back from a full-screen program: a new line from here
                self._tail[:] = left
                return
        nl = data.rfind(b"\n") if not self._prompt else -1
        if nl >= 0:  # between lines: the current line is what follows the last newline
            self._tail[:] = data[nl + 1 :]
            self._fresh = True
        else:  # a line is being typed: all of it (a long line wraps, redraws move up)
            self._tail += data
        if len(self._tail) > MAX_LINE_BYTES:
            cut = max(self._tail.rfind(b"\n"), self._tail.rfind(b"\r"))
            keep = self._tail[cut + 1 :] if cut >= 0 else b""
            self._tail[:] = keep[-MAX_LINE_BYTES:]

    def _scan_alternate(self, data: bytes) -> bytes | None:
        """Follow the alternate screen; what follows leaving it, if it was left."""
        seen = self._alt_tail + data
        for m in _EDITOR.finditer(seen):
            self.editing = m.group(1) == b"h"
        last, end = None, 0
        for m in _ALT_SCREEN.finditer(seen):
            last, end = m.group(1), m.end()
        # keep a possibly cut sequence at the end for the next chunk (never a found one)
        esc = seen.rfind(b"\x1b", max(len(seen) - _ALT_TAIL, end))
        self._alt_tail = seen[esc:] if esc >= 0 else b""
        if last is None:
            return None
        was, self.alternate = self.alternate, last == b"h"
        if was and not self.alternate:
            self.reset(newline=False)
            return seen[end:]
        return None

    @property
    def at_new_line(self) -> bool:
        """The shell's newline after Enter, Ctrl-C or a refusal came: a new line started."""
        return self._fresh

    @property
    def at_prompt(self) -> bool:
        """A new line started and shows just the last prompt seen (the shell waits for keys)."""
        if not self._fresh or self._prompt or not self._last_prompt:
            return False
        return render(bytes(self._tail), self.width)[0].rstrip() == self._last_prompt.rstrip()

    @property
    def echo_pending(self) -> bool:
        """The line may not be on the screen yet: keys went out and no output came back
        since, the last keys typed are not on the line, or keys were typed ahead of the
        prompt and the prompt has not come."""
        if self._echo_pending or (self._prompt == "" and not self._fresh):
            return True
        return bool(self._recent) and self._recent.decode() not in self._command(strip=False)

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
            self.reset(newline=stop == b"\x03")
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
        if not self._fresh:  # typed ahead: the new prompt is not there yet (follows a newline)
            self._prompt = ""
            return
        text, col = render(bytes(self._tail), self.width)
        self._prompt = text[:col]
        if self._prompt.strip():
            self._last_prompt = self._prompt

    def _typed(self, data: bytes) -> None:
        if not data:
            return
        self._snapshot()
        if _PRINTABLE.search(data) is not None:
            self._echo_pending = True
        if _PLAIN.fullmatch(data):
            self._recent = (self._recent + data)[-_RECENT:]
        else:
            self._recent = b""

    # --- what the relay asks -------------------------------------------------------------

    @property
    def in_paste(self) -> bool:
        """A bracketed paste started and its end has not come yet (its bytes are held)."""
        return self._paste is not None

    def line(self) -> str:
        """The command on the current line as the terminal shows it, prompt removed."""
        return self._command(strip=True)

    def _command(self, strip: bool) -> str:
        text, _col = render(bytes(self._tail), self.width)
        if self._prompt and text.startswith(self._prompt):
            text = text[len(self._prompt) :]
        elif self._last_prompt and (i := text.rfind(self._last_prompt)) >= 0:
            text = text[i + len(self._last_prompt) :]  # typed ahead: echoed before the prompt
        return text.strip() if strip else text.lstrip()

    def submitted(self) -> None:
        """The Enter was forwarded: the next line starts after the shell's newline."""
        self.reset(newline=True)

    def reset(self, newline: bool = True) -> None:
        """A new line: after Enter, Ctrl-C or a refused line (once the shell's newline came),
        after Ctrl-U or leaving a full-screen program (at once)."""
        self._prompt = None
        self._recent = b""
        self._fresh = not newline
