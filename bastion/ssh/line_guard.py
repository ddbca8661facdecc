"""Command guardrails for a terminal: each typed line is judged before its Enter goes on.

The relay hands ``LineGuard`` the contractor's input instead of writing it to the
target, and the target's output as it passes. Keys go straight on until Enter (or
a bracketed paste); then the guard holds that key and everything typed after it,
asks the session core about the line the terminal shows
(``bastion.policy.terminal_line``), and forwards the Enter when it is allowed.
A refused line is never entered: the target gets Ctrl-C instead, so the shell
drops it, and the contractor is told which rule. Input typed while waiting is
kept in order and replayed after the decision.

Only sessions where a rule could refuse a command get a guard (``Session.watches``);
the others relay as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bastion.policy.terminal_line import (
    INTERRUPT,
    Enter,
    LineTracker,
    Paste,
    PasteTooLong,
    Submit,
    Unchecked,
)
from bastion.session.core import Session

log = logging.getLogger(__name__)

ECHO_WAIT = 0.5
"""Seconds Enter waits for the echo of keys sent with it (a paste, a script).

Without an echo (a password prompt) the line is judged as the terminal shows it."""
EDITOR_ECHO_WAIT = 10.0
"""The same while the shell's line editor reads the line (it echoes every key): a busy
target is waited for, so the line judged is the whole line, not what showed in time."""
RESET_WAIT = 10.0
"""Seconds input stays held at most after a refused line while the shell clears it
(a program that ignores Ctrl-C); a shell shows its new line first, however busy it is."""
RESET_AGAIN = 1.0
"""Seconds without a new line after the interrupt before it is sent again: bash misses a
Ctrl-C that lands as it goes back to reading keys (it then keeps the refused line)."""
RESET_QUIET = 0.1
"""Once the new line started, the target quiet this long means it waits for keys."""
TYPED = "typed"
"""The ``extra`` of ``Session.judge`` for a line rebuilt from a terminal (not exact)."""


class LineGuard:
    """Holds each Enter of one terminal until its line is judged."""

    def __init__(self, session: Session, write: Callable[[bytes], None], width: int) -> None:
        self.session = session
        self.tracker = LineTracker(width=width)
        self._write = write
        self._held = bytearray()
        self._busy = False
        self._output = asyncio.Event()
        self._flagged = False
        self._task: asyncio.Task[None] | None = None

    def output(self, data: bytes) -> None:
        """Target output on its way to the contractor."""
        self.tracker.output(data)
        self._output.set()

    def input(self, data: bytes) -> None:
        """Contractor input: forwarded, or held behind a line being judged."""
        if self._busy:
            self._held += data
            return
        forward, submit, rest = self.tracker.input(data)
        if forward:
            self._write(forward)
        if submit is None:
            return
        self._busy = True
        self._held += rest
        self._task = asyncio.get_running_loop().create_task(self._decide(submit))

    async def _decide(self, submit: Submit) -> None:
        try:
            allowed = await self._judge(submit)
        except Exception:  # fail closed: the line is not entered
            log.exception("judging a typed line failed; it is not entered")
            allowed = False
        if not allowed and not self.session.ending:
            self._write(INTERRUPT)
            self.tracker.reset()
            await self._shell_reset()
        self._busy = False
        if self.session.ending:
            self._held.clear()
            return
        if self._held:
            held, self._held = bytes(self._held), bytearray()
            self.input(held)

    async def _judge(self, submit: Submit) -> bool:
        session = self.session
        if isinstance(submit, Unchecked):
            self._unchecked()
            self._write(submit.key)
            return True
        if isinstance(submit, PasteTooLong):
            session.warn(f"a paste of {submit.size} bytes is too long to check; it was not sent")
            return False
        if isinstance(submit, Paste):
            for line in submit.lines:
                if not await session.judge("command", line, TYPED):
                    return False
            if not session.ending:
                self._write(submit.raw)
            return not session.ending
        assert isinstance(submit, Enter)  # noqa: S101  the last kind
        if self.tracker.echo_pending:
            await self._echo_settled()
        line = self.tracker.line()
        if line and not await session.judge("command", line, TYPED):
            return False
        if session.ending:
            return True  # ended while judging (an admin, the time box): nothing more to send
        self._write(submit.key)
        self.tracker.submitted()
        return True

    async def _echo_settled(self) -> None:
        """Wait (at most ``ECHO_WAIT``, or ``EDITOR_ECHO_WAIT`` at a line editor) until the
        line typed is on the screen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (EDITOR_ECHO_WAIT if self.tracker.editing else ECHO_WAIT)
        while self.tracker.echo_pending:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._output.clear()
            try:
                await asyncio.wait_for(self._output.wait(), remaining)
            except TimeoutError:
                return

    async def _shell_reset(self) -> None:
        """After Ctrl-C, hold what was typed next until the shell shows a new prompt.

        bash reads keys already queued before it acts on the signal: sent on at
        once, they would land on the refused line and be dropped with it. bash can also
        miss the signal altogether (it lands as bash goes back to reading keys: the
        line stays), so without a new line the interrupt is sent again. Released
        on a timer instead (a busy target), they were judged with the refused line
        still on the screen: an innocent line refused, or judged as text it is not.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESET_WAIT
        again = loop.time() + RESET_AGAIN
        tracker = self.tracker
        while not tracker.at_prompt and not self.session.ending:
            now = loop.time()
            if now >= deadline:
                return
            if not tracker.at_new_line and now >= again:
                self._write(INTERRUPT)  # the line is still there: once more (harmless if not)
                again = now + RESET_AGAIN
            self._output.clear()
            wait = min(deadline, again) - now
            if tracker.at_new_line:
                wait = min(wait, RESET_QUIET)
            try:
                await asyncio.wait_for(self._output.wait(), wait)
            except TimeoutError:
                if tracker.at_new_line:
                    return  # a new line and a quiet target: a prompt we did not know

    def _unchecked(self) -> None:
        """A line typed in a full-screen program: reported once per session, not judged."""
        if self._flagged:
            return
        self._flagged = True
        self.session.alert(
            "unchecked-input",
            "lines typed in a full-screen program cannot be checked against the command rules",
        )
