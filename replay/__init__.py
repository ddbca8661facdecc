"""replay: turn recorded sessions back into screens.

``replay.terminal`` is a headless terminal emulator (bytes in, immutable screen
snapshots out) built on pyte with our own escape-sequence parser (``replay.vtparser``);
``replay.keyframes`` takes periodic emulator states of a recording so a player can seek.
Neither imports ``textual``; nor do ``replay.playback`` (the player's rules, on an
injected clock), ``replay.keyframe_store``/``replay.cache`` and ``replay.source``.
The Textual console is ``replay.app`` (screens in ``replay.screens``, widgets in
``replay.widgets``), imported only by the ``bastion tui/watch/replay`` commands;
this package is never imported by ``bastion`` or ``recorder``.
"""

from __future__ import annotations

from replay.terminal import Cell, ScreenSnapshot, TerminalEmulator

__all__ = ["Cell", "ScreenSnapshot", "TerminalEmulator"]
