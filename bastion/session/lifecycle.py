"""The life of one session as a pure state machine: no sockets, no clock, no store.

admitted → recording → live → ending → ended. Each step is a method that either
moves the session forward or says it cannot; the first cause that ends a session
wins and every later one is ignored, so a session that the contractor closes at
the same instant as an admin terminates it ends exactly once, for one reason.
The session core (``bastion.session.core``) drives this object and carries out
what it says; tests drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Phase(Enum):
    """Where a session is in its life."""

    ADMITTED = "admitted"
    """Access was granted; nothing recorded or relayed yet."""
    RECORDING = "recording"
    """The recording exists and the session row is written; the target is being reached."""
    LIVE = "live"
    """Bytes are relayed and the time box watches the session."""
    ENDING = "ending"
    """An end was decided; the adapter is closing both legs."""
    ENDED = "ended"
    """Recording sealed, row final, ``session.end`` audited."""


class LifecycleError(Exception):
    """A step was asked out of order: a bug in an adapter, never a contractor's doing."""


@dataclass
class Lifecycle:
    """One session's phase and the reason it ends."""

    phase: Phase = Phase.ADMITTED
    end_reason: str | None = None
    end_message: str | None = None
    history: list[Phase] = field(default_factory=lambda: [Phase.ADMITTED])
    recorded: bool = False
    """A session row and a recording exist, so finishing has work to do."""

    def _move(self, to: Phase) -> None:
        self.phase = to
        self.history.append(to)

    def recording_started(self) -> None:
        """The recording and the session row exist (raises LifecycleError out of order).

        An end decided while the recording was being opened keeps the session
        ending; the row and the file are then finished like any other.
        """
        if self.phase not in (Phase.ADMITTED, Phase.ENDING):
            raise LifecycleError(f"recording started in phase {self.phase.value}")
        self.recorded = True
        if self.phase is Phase.ADMITTED:
            self._move(Phase.RECORDING)

    def went_live(self) -> bool:
        """The relay runs. False when an end was decided meanwhile (the adapter must not relay)."""
        if self.phase is Phase.RECORDING:
            self._move(Phase.LIVE)
            return True
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return False
        raise LifecycleError(f"went live from phase {self.phase.value}")

    def end(self, reason: str, message: str | None = None) -> bool:
        """Decide the end. True for the first cause; False if an end was already decided."""
        if self.phase in (Phase.ENDING, Phase.ENDED):
            return False
        self.end_reason = reason
        self.end_message = message
        self._move(Phase.ENDING)
        return True

    def finished(self) -> bool:
        """The final row is written. True the first time only (finishing is idempotent)."""
        if self.phase is Phase.ENDED:
            return False
        if self.phase is not Phase.ENDING:
            raise LifecycleError(f"finished from phase {self.phase.value} without an end")
        self._move(Phase.ENDED)
        return True

    @property
    def ending(self) -> bool:
        """An end was decided (or the session already ended)."""
        return self.phase in (Phase.ENDING, Phase.ENDED)
