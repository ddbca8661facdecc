"""The bastion console: one Textual app for browsing, replaying and watching sessions.

``bastion tui`` opens the sessions browser (an approver, who may not browse
sessions, gets the access requests instead), ``bastion watch [ID]`` the live
sessions (or one live session), ``bastion replay ID|FILE`` the player. The app reaches a node
only through a ``SessionSource`` (in production ``ControlClient`` on the node's
control socket, connected inside the app's event loop) and reads recordings with
``recorder``; ``bastion replay FILE`` needs no node at all.

``bastion.cli`` imports this module lazily, inside the command, so the server side
never loads Textual.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from textual.app import App
from textual.binding import Binding

from bastion.errors import BastionError
from recorder import RecordingReader
from recorder.errors import RecordingError
from replay.clock import Clock, MonotonicClock
from replay.messages import OpenAccess, OpenAlerts, OpenLive, OpenPlayer, OpenRequests
from replay.opening import RecordingOpener, open_reader
from replay.screens.access import AccessScreen
from replay.screens.alerts import AlertsScreen
from replay.screens.browser import BrowserScreen
from replay.screens.live import LiveScreen
from replay.screens.player import PlayerScreen
from replay.screens.requests import RequestsScreen
from replay.source import SessionInfo, SessionSource, SourceError

__all__ = ["ConsoleApp", "Start", "run_console", "start_for"]

Connect = Callable[[], Awaitable[SessionSource]]


@dataclass(frozen=True)
class Start:
    """What the console opens on."""

    mode: Literal["browse", "watch", "replay"] = "browse"
    session_id: str | None = None
    path: str | None = None
    """``replay`` of a file: no node needed."""


class ConsoleApp(App[None]):
    """See the module docstring. ``clock`` drives playback, ``wall_clock`` the browser."""

    CSS_PATH = "app.tcss"
    TITLE = "bastion"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [Binding("ctrl+c", "quit", "Quit", show=False, priority=True)]

    def __init__(
        self,
        start: Start,
        connect: Connect | None = None,
        *,
        clock: Clock | None = None,
        wall_clock: Callable[[], float] = time.time,
        refresh_interval: float | None = 5.0,
        opener: RecordingOpener | None = None,
    ) -> None:
        """A console opening on ``start``, reaching the node with ``connect`` (if needed);
        ``opener`` reads what the node names as a recording (spool file or S3 object)."""
        super().__init__()
        self.opener = opener
        self.start = start
        self.connect = connect
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.wall_clock = wall_clock
        self.refresh_interval = refresh_interval
        self.source: SessionSource | None = None
        self.admin = False
        self.role = ""

    async def on_mount(self) -> None:
        """Connect (unless replaying a file) and open the first screen."""
        start = self.start
        if start.mode == "replay" and start.path is not None:
            self.push_screen(
                PlayerScreen(
                    start.path, self.clock, title=Path(start.path).name, opener=self.opener
                )
            )
            return
        if self.connect is None:
            self.exit(return_code=2, message="bastion: this view needs a connection to a node")
            return
        try:
            self.source = await self.connect()
            operator = await self.source.whoami()
        except (SourceError, OSError) as e:
            self.exit(return_code=1, message=f"bastion: {e}")
            return
        self.admin = operator.role == "admin"
        self.role = operator.role
        self.sub_title = f"{operator.name} ({operator.role})"
        if operator.role == "approver":  # approvers decide requests, they do not browse
            self.open_requests()
        elif start.mode == "replay" and start.session_id is not None:
            await self.open_player(start.session_id, title=start.session_id)
        elif start.mode == "watch" and start.session_id is not None:
            await self.open_live_by_id(start.session_id)
        else:
            self.push_screen(
                BrowserScreen(
                    self.source,
                    admin=self.admin,
                    wall_clock=self.wall_clock,
                    live_only=start.mode == "watch",
                    refresh_interval=self.refresh_interval,
                )
            )

    async def on_unmount(self) -> None:
        """Close the node connection."""
        if self.source is not None:
            await self.source.close()

    async def open_player(
        self,
        session_id: str,
        *,
        title: str = "",
        start_at: float | None = None,
        marker: str | None = None,
        highlight: str | None = None,
        matches: tuple[float, ...] = (),
    ) -> None:
        """Ask the node where the recording is and open the player on it."""
        if self.source is None:
            return
        try:
            path = await self.source.recording_path(session_id)
        except SourceError as e:
            self._fail(str(e))
            return
        self.push_screen(
            PlayerScreen(
                path,
                self.clock,
                title=title or session_id,
                start_at=start_at,
                marker=marker,
                opener=self.opener,
                highlight=highlight,
                matches=matches,
            )  # fmt: skip
        )

    def open_live(self, session: SessionInfo) -> None:
        """Open the live view of ``session``."""
        if self.source is None:
            return
        if not self.admin:
            self._fail("watching live sessions needs the admin role")
            return
        self.push_screen(LiveScreen(self.source, session, admin=self.admin))

    def open_requests(self) -> None:
        """Open the access requests view."""
        if self.source is None:
            return
        self.push_screen(
            RequestsScreen(
                self.source,
                role=self.role,
                wall_clock=self.wall_clock,
                refresh_interval=self.refresh_interval,
            )
        )

    def open_alerts(self) -> None:
        """Open the alerts view."""
        if self.source is None:
            return
        self.push_screen(
            AlertsScreen(
                self.source,
                admin=self.admin,
                wall_clock=self.wall_clock,
                refresh_interval=self.refresh_interval,
            )
        )

    async def open_live_by_id(self, session_id: str) -> None:
        """``bastion watch ID``: find the live session and watch it."""
        if self.source is None:
            return
        try:
            live = await self.source.list_sessions(live=True)
        except SourceError as e:
            self._fail(str(e))
            return
        session = next((s for s in live if s.id == session_id), None)
        if session is None:
            self._fail(f"session {session_id} is not live (try 'bastion replay {session_id}')")
            return
        self.open_live(session)

    def _fail(self, message: str) -> None:
        """Report a problem; exit if there is no screen to go back to."""
        if len(self.screen_stack) <= 1:
            self.exit(return_code=1, message=f"bastion: {message}")
        else:
            self.notify(message, severity="error", timeout=10, markup=False)

    async def on_open_player(self, message: OpenPlayer) -> None:
        """A screen asked to play a session."""
        await self.open_player(
            message.session_id,
            title=message.title,
            start_at=message.start_at,
            marker=message.marker,
            highlight=message.highlight,
            matches=message.matches,
        )

    def on_open_live(self, message: OpenLive) -> None:
        """A screen asked to watch a session."""
        self.open_live(message.session)

    def on_open_requests(self, message: OpenRequests) -> None:
        """A screen asked for the access requests."""
        self.open_requests()

    def on_open_access(self, message: OpenAccess) -> None:
        """A screen asked for a user's effective access."""
        if self.source is not None:
            self.push_screen(AccessScreen(self.source, message.user))

    def on_open_alerts(self, message: OpenAlerts) -> None:
        """A screen asked for the alerts."""
        self.open_alerts()


# -- command line -----------------------------------------------------------------------


def _operator_name(args: argparse.Namespace) -> str:
    name = getattr(args, "user", None) or os.environ.get("BASTION_USER")
    return name or getpass.getuser()


def _connector(args: argparse.Namespace) -> Connect:
    """How to reach the node named by ``--config`` (its control socket)."""
    from bastion.config import load_config
    from bastion.control.client import ControlClient

    config = load_config(args.config)
    socket_path = config.control.socket
    if socket_path is None:
        raise SourceError(
            f'{config.path} has no [control] socket; set one (e.g. socket = "control.sock") '
            "and restart 'bastion serve'"
        )
    user = _operator_name(args)
    token = os.environ.get("BASTION_CONTROL_TOKEN")

    async def connect() -> SessionSource:
        return await ControlClient.connect(str(socket_path), user=user, token=token)

    return connect


def _opener(args: argparse.Namespace, start: Start) -> RecordingOpener | None:
    """None (local files) for ``replay FILE``; with the node's config, S3 objects too
    (the node names an uploaded recording ``s3://bucket/key``)."""
    if start.path is not None and not start.path.startswith("s3://"):
        return None
    from bastion.config import load_config
    from bastion.recording_files import ConfigOpener

    return ConfigOpener(load_config(args.config))


def start_for(args: argparse.Namespace) -> Start:
    """What ``bastion tui|watch|replay`` opens on (a replay argument that is an existing
    file, a path or ends in ``.bastrec`` is a file; anything else a session id)."""
    if args.command == "replay":
        target = str(args.recording)
        if target.startswith("s3://"):
            return Start("replay", path=target)
        if os.path.sep in target or target.endswith(".bastrec") or os.path.isfile(target):
            return Start("replay", path=target)
        return Start("replay", session_id=target)
    if args.command == "watch":
        return Start("watch", session_id=args.session)
    return Start("browse")


def run_console(args: argparse.Namespace) -> int:
    """Entry point of ``bastion tui``, ``bastion watch`` and ``bastion replay``."""
    start = start_for(args)
    try:
        opener = _opener(args, start)
    except BastionError as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 1
    if start.path is not None:  # a file needs no node: say at once if it cannot be read
        try:
            (
                open_reader(opener, start.path) if opener else RecordingReader.open(start.path)
            ).close()
        except (RecordingError, OSError) as e:
            print(f"bastion: cannot open {start.path}: {e}", file=sys.stderr)
            return 1
    try:
        connect = _connector(args) if start.path is None else None
    except SourceError as e:
        print(f"bastion: {e}", file=sys.stderr)
        return 1
    app = ConsoleApp(start, connect, opener=opener)
    app.run()
    return app.return_code or 0
