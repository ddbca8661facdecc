"""Pilot tests of the access-requests view: listing with reason and history, approve
(optionally shorter) and deny with a reason, the pending count on the browser, who
gets which keys; and once against a real node, where the approval must become a grant."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Label, Static

from bastion.control.client import ControlClient
from bastion.request_flow import RequestFlow
from bastion.store.models import GrantState, RequestState, Role
from replay.app import ConsoleApp, Start
from replay.clock import ManualClock
from replay.screens.browser import BrowserScreen
from replay.screens.dialogs import ApproveDialog, ReasonDialog
from replay.screens.requests import RequestsScreen
from replay.source import SessionSource
from replay.widgets.request_detail import RequestDetail
from tests.peers.bastion_node import BastionHarness
from tests.replay.sample_source import NOW, REQUESTS, SampleSource


@pytest.fixture(autouse=True)
def keyframe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_KEYFRAME_CACHE", str(tmp_path / "cache"))


def console(source: SessionSource, wall_clock: float = NOW) -> ConsoleApp:
    async def connect() -> SessionSource:
        return source

    return ConsoleApp(
        Start("browse"),
        connect,
        clock=ManualClock(),
        wall_clock=lambda: wall_clock,
        refresh_interval=None,
    )


async def settle(pilot: Pilot[None]) -> None:
    await pilot.pause()
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def rows(app: ConsoleApp) -> list[list[str]]:
    table = app.screen.query_one("#requests", DataTable)
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def text_of(app: ConsoleApp, selector: str) -> str:
    return str(app.screen.query_one(selector, Static).render())


def notified(app: ConsoleApp, text: str) -> bool:
    return any(text in str(n.message) for n in app._notifications)


async def open_requests(pilot: Pilot[None], app: ConsoleApp) -> RequestsScreen:
    await settle(pilot)
    assert isinstance(app.screen, BrowserScreen)
    await pilot.press("p")
    await settle(pilot)
    assert isinstance(app.screen, RequestsScreen)
    return app.screen


async def test_browser_counts_pending_requests_and_opens_them() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert "2 pending requests (p)" in text_of(app, "#info")
        source.requests.append(replace(REQUESTS[0], id=13, reason="one more"))
        await pilot.press("r")
        await settle(pilot)
        assert "3 pending requests (p)" in text_of(app, "#info")
        source.requests.pop()
        await open_requests(pilot, app)
        assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows(app)] == [
            ("12", "PENDING", "alice", "web1", "2h00m"),
            ("11", "PENDING", "carol", "db1", "30m00s"),
            ("10", "approved", "dave", "web2", "1h00m"),
            ("9", "denied", "alice", "db1", "8h00m"),
        ]
        assert "2 pending · 2 decided" in text_of(app, "#info")
        detail = text_of(app, "#request-detail")  # the first row's request, in full
        assert "reason: INC-4711 restart nginx after the cert renewal" in detail
        assert "lapses in 45m00s" in detail and "from: bob, eve" in detail
        await pilot.press("down")
        await pilot.pause()
        detail = text_of(app, "#request-detail")
        assert "#11 access · carol → db1 as readonly" in detail
        assert "needs 1 more approval from: eve" in detail
        assert "bob approved: fine by me" in detail  # the history
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, BrowserScreen)


async def test_approve_shorter_with_a_note() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_requests(pilot, app)
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, ApproveDialog)
        await pilot.press(*"3h", "enter")  # longer than asked: refused in the dialog
        await pilot.pause()
        assert isinstance(app.screen, ApproveDialog)
        problem = app.screen.query_one("#problem", Label)
        assert "may only shorten: at most 2h00m" in str(problem.render())
        app.screen.query_one("#for").value = ""  # type: ignore[attr-defined]
        await pilot.press(*"30m", "tab", *"INC only", "enter")
        await settle(pilot)
        assert isinstance(app.screen, RequestsScreen)
        assert ("approve_request", "12", "1800.0", "INC only") in source.calls
        assert rows(app)[0][:2] == ["12", "approved"]
        assert notified(app, "request #12 approved: grant #112")
        assert "eve approved" in text_of(app, "#request-detail")
        await pilot.press("escape")
        await settle(pilot)
        assert "1 pending request (p)" in text_of(app, "#info")  # counted again


async def test_approve_as_asked_and_deny_with_a_reason() -> None:
    source = SampleSource()
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_requests(pilot, app)
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("enter")  # nothing typed: as asked, no note
        await settle(pilot)
        assert ("approve_request", "12", "None", "None") in source.calls
        await pilot.press("down", "d")
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press("enter")  # a denial needs a reason
        await pilot.pause()
        assert isinstance(app.screen, ReasonDialog)
        await pilot.press(*"use the replica", "enter")
        await settle(pilot)
        assert ("deny_request", "11", "use the replica") in source.calls
        assert rows(app)[1][:2] == ["11", "denied"]
        await pilot.press("d")  # decided requests are not decided again
        await pilot.pause()
        assert isinstance(app.screen, RequestsScreen)
        assert notified(app, "request #11 is denied; only pending ones are decided")
        assert [c[0] for c in source.calls].count("deny_request") == 1


async def test_the_nodes_refusal_is_shown() -> None:
    own = replace(REQUESTS[0], id=13, requester="eve", reason="my own")
    source = SampleSource(requests=[own])
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_requests(pilot, app)
        await pilot.press("a")
        await pilot.pause()
        await pilot.press("enter")
        await settle(pilot)
        assert notified(app, "nobody approves their own request")
        assert rows(app)[0][:2] == ["13", "PENDING"]


async def test_auditors_list_requests_without_the_decision_keys() -> None:
    source = SampleSource(role="auditor")
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_requests(pilot, app)
        assert len(rows(app)) == 4
        assert not screen.check_action("approve", ()) and not screen.check_action("deny", ())
        await pilot.press("a", "d")
        await pilot.pause()
        assert isinstance(app.screen, RequestsScreen)
        assert not [c for c in source.calls if c[0] in ("approve_request", "deny_request")]


async def test_approvers_open_on_the_requests() -> None:
    source = SampleSource(role="approver")
    app = console(source)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, RequestsScreen)
        assert not [c for c in source.calls if c[0] == "list_sessions"]
        await pilot.press("escape")  # the only screen: leaving quits
        await pilot.pause()
    assert app.return_code == 0


async def test_request_text_is_never_markup() -> None:
    hostile = replace(REQUESTS[0], reason="grep '[a-z]' [/bold] x", requester="m[b]al")
    app = console(SampleSource(requests=[hostile]))
    async with app.run_test(size=(80, 24)) as pilot:
        await open_requests(pilot, app)
        assert rows(app)[0][2] == "m[b]al"
        assert "reason: grep '[a-z]' [/bold] x" in text_of(app, "#request-detail")
        await pilot.press("d")
        await pilot.pause()
        title = app.screen.query_one(".dialog-title", Label)
        assert "m[b]al?" in str(title.render())


@pytest.mark.integration
async def test_approve_and_deny_on_a_real_node(bastion: BastionHarness) -> None:
    """An approver's console against a real node: the approval becomes a grant in the
    store for the shorter time, the denial reaches the store with its reason."""
    sock = bastion.control_socket()
    approver = bastion.contractor("apr", Role.APPROVER)
    c = bastion.contractor()
    flow = RequestFlow(bastion.store, bastion.config.requests)
    asked = flow.create(c.user, targets=["web1"], duration=7200, reason="TUI-1 deploy")
    other = flow.create(c.user, targets=["web2"], duration=600, reason="TUI-2 look around")

    async def connect() -> SessionSource:
        return await ControlClient.connect(sock, user=approver.name)

    app = ConsoleApp(Start("browse"), connect, clock=ManualClock(), refresh_interval=None)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, RequestsScreen)  # an approver opens on the requests
        screen = app.screen
        ids = [r.id for r in screen.requests.values()]
        assert asked.request.id in ids and other.request.id in ids
        table = screen.query_one("#requests", DataTable)
        table.move_cursor(row=table.get_row_index(str(asked.request.id)), animate=False)
        await pilot.pause()
        assert "reason: TUI-1 deploy" in str(screen.query_one(RequestDetail).render())
        await pilot.press("a")
        await pilot.pause()
        await pilot.press(*"30m", "tab", *"short is enough", "enter")
        await settle(pilot)
        assert notified(app, f"request #{asked.request.id} approved: grant #")
        table.move_cursor(row=table.get_row_index(str(other.request.id)), animate=False)
        await pilot.press("d")
        await pilot.pause()
        await pilot.press(*"not this week", "enter")
        await settle(pilot)
        assert notified(app, f"request #{other.request.id} denied")
    approved = bastion.store.get_request(asked.request.id)
    assert approved is not None and approved.state is RequestState.APPROVED
    (grant,) = bastion.store.list_grants(user_id=c.user.id)
    assert approved.grant_ids == (grant.id,) and grant.request_id == asked.request.id
    assert grant.approved_by == approver.name and grant.not_after - grant.not_before == 1800
    assert grant.state_at(time.time()) is GrantState.ACTIVE
    denied = bastion.store.get_request(other.request.id)
    assert denied is not None and denied.state is RequestState.DENIED
    assert denied.decision_reason == "not this week" and denied.decided_by == approver.name
    (row,) = bastion.audit(approver.name, "request.approved")
    assert row.details["via"] == "control" and row.details["reason"] == "short is enough"
