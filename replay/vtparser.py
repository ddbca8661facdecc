"""A DEC VT500-style escape-sequence parser that drives a screen object.

Why not pyte's ``Stream``: real captures break it. vim sends ``ESC P zz ESC \\`` (a
device-control string, which pyte draws as text), ``CSI > 4;2 m`` (xterm's
modifyOtherKeys, which pyte reads as SGR "underline") and ``CSI ? 4 m`` (which makes pyte
raise ``TypeError``); colon sub-parameters (``CSI 38:2::255:0:0 m``) leak as text, and an
``ESC`` inside a sequence does not abort it. This parser follows the state diagram of the
DEC VT500 series (Paul Williams' "A parser for DEC's ANSI-compatible video terminals"):
ground, escape, CSI (parameters with ``:`` sub-parameters, private prefix, intermediates),
OSC strings (window title) and DCS/SOS/PM/APC strings (read and ignored). Sequences it
does not implement are consumed whole, so nothing leaks onto the screen.

It is a generator-based state machine: plain text runs go straight to ``screen.draw`` in
one call (the fast path), every other character is sent to the generator. Sequences may
be split across ``feed`` calls; ``ground`` tells whether the parser is between sequences
(the only moment a keyframe can be taken without also saving the parser's state).

The screen is duck-typed: any object with the methods named here (``replay.terminal``'s
``_Screen``, a ``pyte.Screen`` subclass).
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any

__all__ = ["VTParser"]

_MAX_STRING = 4096  # characters of an OSC string kept (the rest is read and dropped)
_MAX_PARAMS = 64

_TEXT = re.compile("[^\x00-\x1f\x7f-\x9f]+")
_CSI_RE = re.compile(rf"\x1b\[([<=>?]?)([0-9:;]{{0,{4 * _MAX_PARAMS}}})([ -/]{{0,4}})([@-~])")
_ESC, _CAN, _SUB, _BEL = "\x1b", "\x18", "\x1a", "\x07"
_C1 = {"\x9b": "[", "\x9d": "]", "\x90": "P", "\x98": "X", "\x9e": "^", "\x9f": "_"}
_C1.update({"\x84": "D", "\x85": "E", "\x88": "H", "\x8d": "M"})
_Fsm = Generator[bool, str, None]
_Sub = Generator[bool, str, str | None]


class VTParser:
    """Turns decoded text into calls on a screen; never raises on any input."""

    def __init__(self, screen: Any) -> None:
        self.screen = screen
        self.ground = True
        self._fsm = self._run()
        next(self._fsm)

    def feed(self, text: str) -> None:
        """Consume text; a sequence may be split across calls.

        In the ground state three fast paths skip the generator: runs of plain text,
        C0 controls, and complete CSI sequences without embedded controls (the bulk of
        what full-screen programs send). Anything else goes through the state machine.
        """
        draw = self.screen.draw
        i, n = 0, len(text)
        while i < n:
            if self.ground:
                match = _TEXT.match(text, i)
                if match:
                    draw(match.group())
                    i = match.end()
                    continue
                char = text[i]
                if char < " " and char != _ESC:
                    self._execute(char)
                    i += 1
                    continue
                match = _CSI_RE.match(text, i)
                if match:
                    prefix, params, intermediates, final = match.groups()
                    self._finish_csi(final, prefix, params, intermediates)
                    i = match.end()
                    continue
            self.ground = self._fsm.send(text[i])
            i += 1

    def _run(self) -> _Fsm:
        char = yield True
        while True:
            again: str | None = None
            if char == _ESC:
                again = yield from self._escape()
            elif char in _C1:
                again = yield from self._final(_C1[char])
            elif char < " ":
                self._execute(char)
            elif not "\x7f" <= char <= "\x9f":
                self.screen.draw(char)
            char = again if again is not None else (yield True)

    def _execute(self, char: str) -> None:
        screen = self.screen
        if char in "\n\x0b\x0c":
            screen.end_pending_wrap()
            screen.linefeed()
        elif char == "\r":
            screen.carriage_return()
        elif char == "\x08":
            screen.backspace()
        elif char == "\t":
            screen.end_pending_wrap()
            screen.tab()
        elif char == "\x0e":
            screen.shift_out()
        elif char == "\x0f":
            screen.shift_in()

    def _escape(self, first: str | None = None) -> _Sub:
        intermediates = ""
        char = first if first is not None else (yield False)
        while True:
            if " " <= char <= "/":
                intermediates = (intermediates + char)[-2:]
            elif char == _ESC:
                intermediates = ""
            elif char in (_CAN, _SUB):
                return None
            elif char < " ":
                self._execute(char)
            else:
                break
            char = yield False
        if intermediates:
            if intermediates[0] in "()*+-./":
                self.screen.designate(intermediates[0], char)
            elif intermediates == "#" and char == "8":
                self.screen.alignment_display()
            return None
        return (yield from self._final(char))

    def _final(self, char: str) -> _Sub:
        screen = self.screen
        if char == "[":
            return (yield from self._csi())
        if char == "]":
            return (yield from self._string(osc=True))
        if char in "PX^_":
            return (yield from self._string(osc=False))
        screen.end_pending_wrap()
        if char == "D":
            screen.index()
        elif char == "E":
            screen.carriage_return()
            screen.index()
        elif char == "M":
            screen.reverse_index()
        elif char == "H":
            screen.set_tab_stop()
        elif char == "7":
            screen.save_cursor()
        elif char == "8":
            screen.restore_cursor()
        elif char == "c":
            screen.reset()
        return None

    def _csi(self) -> _Sub:
        params, intermediates, prefix, valid = "", "", "", True
        while True:
            char = yield False
            if "0" <= char <= "?":
                if char in "<=>?" and not params and not prefix:
                    prefix = char
                elif intermediates or char in "<=>?" or len(params) > 4 * _MAX_PARAMS:
                    valid = False
                else:
                    params += char
            elif " " <= char <= "/":
                intermediates = (intermediates + char)[:4]
            elif "@" <= char <= "~":
                break
            elif char == _ESC:
                return char
            elif char in (_CAN, _SUB) or char > "\x7f":
                return None
            elif char < " ":
                self._execute(char)
        if valid:
            self._finish_csi(char, prefix, params, intermediates)
        return None

    def _finish_csi(self, final: str, prefix: str, params: str, intermediates: str) -> None:  # noqa: C901  one branch per final byte
        """Dispatch a complete, well-formed CSI sequence to the screen."""
        groups = [
            [min(int(s), 65535) if s else None for s in p.split(":")]
            for p in params.split(";")[:_MAX_PARAMS]
        ]
        screen = self.screen
        if final == "m" and not prefix and not intermediates:
            screen.sgr(groups)
            return
        args = [min(g[0] or 0, 9999) for g in groups]
        first = args[0]
        if intermediates:
            if intermediates == "!" and final == "p":
                screen.soft_reset()
            return
        if prefix == "?":
            if final == "h":
                screen.set_mode(*args, private=True)
            elif final == "l":
                screen.reset_mode(*args, private=True)
            elif final in "JK":
                screen.end_pending_wrap()
                (screen.erase_in_display if final == "J" else screen.erase_in_line)(first)
            return
        if prefix:
            return
        if final in "hl":
            (screen.set_mode if final == "h" else screen.reset_mode)(*args)
        elif final in "ST":
            if len(args) == 1:  # CSI T with 5 parameters is mouse tracking, not SD
                screen.scroll(max(first, 1) * (1 if final == "S" else -1))
        elif final in _CSI:
            screen.end_pending_wrap()
            name, arity = _CSI[final]
            getattr(screen, name)(*(args + [0, 0])[:arity])

    def _string(self, osc: bool) -> _Sub:
        """OSC (title) or DCS/SOS/PM/APC (ignored) up to ST; BEL also ends an OSC."""
        text: list[str] = []
        while True:
            char = yield False
            if char == "\x9c" or (osc and char == _BEL):
                break
            if char == _ESC:
                char = yield False
                if char == "\\":
                    break
                return (yield from self._escape(char))
            if char in (_CAN, _SUB):
                return None
            if osc and len(text) < _MAX_STRING:
                text.append(char)
        code, _, value = "".join(text).partition(";")
        if osc and code in ("0", "1", "2"):
            if code != "1":
                self.screen.set_title(value)
            if code != "2":
                self.screen.set_icon_name(value)
        return None


_CSI: dict[str, tuple[str, int]] = {
    "@": ("insert_characters", 1),
    "A": ("cursor_up", 1),
    "B": ("cursor_down", 1),
    "C": ("cursor_forward", 1),
    "D": ("cursor_back", 1),
    "E": ("cursor_down1", 1),
    "F": ("cursor_up1", 1),
    "G": ("cursor_to_column", 1),
    "`": ("cursor_to_column", 1),
    "H": ("cursor_position", 2),
    "f": ("cursor_position", 2),
    "I": ("tab_forward", 1),
    "J": ("erase_in_display", 1),
    "K": ("erase_in_line", 1),
    "L": ("insert_lines", 1),
    "M": ("delete_lines", 1),
    "P": ("delete_characters", 1),
    "X": ("erase_characters", 1),
    "Z": ("tab_back", 1),
    "a": ("cursor_forward", 1),
    "b": ("repeat_last", 1),
    "d": ("cursor_to_line", 1),
    "e": ("cursor_down", 1),
    "g": ("clear_tab_stop", 1),
    "r": ("set_margins", 2),
    "s": ("save_cursor", 0),
    "u": ("restore_cursor", 0),
}
"""CSI finals with plain numeric parameters: the screen method and how many it takes."""
