"""Command-line extraction from keystrokes, for search.

``extract_commands`` replays input events through a minimal line editor and
returns each line submitted with Enter. It is a pure function of the events.

What it can miss or get wrong (it sees keystrokes, not the shell's state):

* tab completion, history recall (arrow keys, ctrl-R) and aliases - only the typed
  keys appear, not what the shell expanded them to;
* cursor movement and editing in the middle of a line (arrow keys are ignored, so
  text typed after moving left is appended at the end);
* input that is not a command: passwords at a prompt, answers to questions, text
  typed into an editor or a REPL - every Enter produces a "command";
* line continuations and here-documents (each physical line is separate);
* programs in raw mode (vim, less) whose keys are not line-oriented.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable

from recorder.events import Event, Input

__all__ = ["extract_commands"]

_ESC = "\x1b"


def _delete_word(line: list[str]) -> None:
    while line and line[-1] == " ":
        line.pop()
    while line and line[-1] != " ":
        line.pop()


def _escape_after(escape: str, ch: str) -> str:
    """The escape state once ``ch`` is read inside an escape sequence ("": it ended)."""
    if escape == "esc":
        return {"[": "csi", "O": "ss3"}.get(ch, "")
    if escape == "csi":
        return "" if "\x40" <= ch <= "\x7e" else "csi"
    return ""  # "ss3": the one byte after ESC O


def extract_commands(events: Iterable[Event]) -> list[tuple[float, str]]:
    """Lines typed by the user, as ``(time of Enter, text)``; see the module docstring.

    Handles backspace (DEL/BS), ctrl-U (kill line), ctrl-W (kill word), ctrl-C (drop
    line); skips escape sequences (CSI, SS3, two-byte) and other control bytes.
    Empty lines are not returned.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    commands: list[tuple[float, str]] = []
    line: list[str] = []
    escape = ""  # "" none, "esc" after ESC, "csi" inside CSI, "ss3" after ESC O
    for event in events:
        if not isinstance(event, Input):
            continue
        for ch in decoder.decode(event.data):
            if escape:
                escape = _escape_after(escape, ch)
            elif ch == _ESC:
                escape = "esc"
            elif ch in "\r\n":
                text = "".join(line).strip()
                if text:
                    commands.append((event.time, text))
                line.clear()
            elif ch in "\x7f\x08":
                del line[-1:]  # nothing to erase on an empty line
            elif ch == "\x15" or ch == "\x03":
                line.clear()
            elif ch == "\x17":
                _delete_word(line)
            elif ch == "\t" or ch >= " ":
                line.append(ch)
    return commands
