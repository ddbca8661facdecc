"""Webhooks against a real HTTP receiver: bodies, signatures, globs, retries, dead receivers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from bastion import audit_actions as actions
from bastion.notify import Notification, Notifier, WebhookConfig, WebhookSink
from bastion.notify.event import REQUEST_APPROVED, REQUEST_CREATED
from tests.bastion.notify.receivers import (
    closed_port,
    eventually,
    http_receiver,
    silent_listener,
)

FAST = (0.01, 0.02, 0.03, 0.04)
"""Retry delays for tests: five attempts in a tenth of a second."""


class AuditLog:
    """Collects what the notifier audits (the node's audit has the same call shape)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str | None, dict[str, Any]]] = []

    async def __call__(
        self, actor: str, action: str, subject: str | None = None, **details: Any
    ) -> None:
        self.rows.append((actor, action, subject, details))


def approved(at: float = 1_700_000_000.5) -> Notification:
    return Notification.for_request(
        REQUEST_APPROVED,
        at,
        "bob",
        request_id=12,
        requester="alice",
        targets=["web1", "db1"],
        reason="fix <nginx> & restart",
        decision="approved",
        decided_by="bob",
        duration=3600,
    )


def notifier(*sinks: WebhookSink, audit: AuditLog | None = None) -> Notifier:
    return Notifier(sinks, audit if audit is not None else AuditLog(), retry_delays=FAST)


async def test_json_body_is_signed_with_the_secret(tmp_path: Path) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text("s3cret-key\n")
    with http_receiver() as rx:
        n = notifier(WebhookSink(WebhookConfig(rx.url, secret_file=secret), "n1"))
        n.start()
        n.send(approved())
        [got] = await eventually(rx.accepted, "the webhook")
        await n.close()

    expected = hmac.new(b"s3cret-key", got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-bastion-signature"] == f"sha256={expected}"
    assert got.headers["content-type"].startswith("application/json")
    assert got.headers["x-bastion-event"] == "request.approved"
    body = json.loads(got.body)
    assert body["event"] == "request.approved"
    assert body["request_id"] == 12
    assert body["requester"] == "alice"
    assert body["targets"] == ["web1", "db1"]
    assert body["reason"] == "fix <nginx> & restart"
    assert body["decision"] == "approved"
    assert body["decided_by"] == "bob"
    assert body["actor"] == "bob" and body["subject"] == "request #12"
    assert body["node"] == "n1" and body["version"] == 1
    assert body["at"] == "2023-11-14T22:13:20.500Z"
    assert body["details"] == {"duration": 3600}
    assert body["id"] == got.headers["x-bastion-delivery"]
    assert n.counts == {"delivered": 1}


async def test_a_wrong_secret_does_not_verify_and_no_secret_no_header(tmp_path: Path) -> None:
    secret = tmp_path / "hook.secret"
    secret.write_text("right")
    with http_receiver() as rx:
        n = notifier(WebhookSink(WebhookConfig(rx.url, secret_file=secret), "n1"))
        n.start()
        n.send(approved())
        [got] = await eventually(rx.accepted, "the webhook")
        await n.close()
    wrong = hmac.new(b"wrong", got.body, hashlib.sha256).hexdigest()
    assert got.headers["x-bastion-signature"] != f"sha256={wrong}"
    with http_receiver() as rx:
        n = notifier(WebhookSink(WebhookConfig(rx.url), "n1"))
        n.start()
        n.send(approved())
        [got] = await eventually(rx.accepted, "the unsigned webhook")
        await n.close()
    assert "x-bastion-signature" not in got.headers


async def test_slack_body_is_escaped_text() -> None:
    with http_receiver() as rx:
        n = notifier(WebhookSink(WebhookConfig(rx.url, format="slack"), "n1"))
        n.start()
        n.send(approved())
        [got] = await eventually(rx.accepted, "the slack webhook")
        await n.close()
    body = json.loads(got.body)
    assert set(body) == {"text"}
    assert body["text"] == (
        "[bastion n1] request.approved request #12 by bob for alice on web1, db1: approved"
        ' - "fix &lt;nginx&gt; &amp; restart"'
    )


async def test_event_globs_choose_what_each_webhook_gets() -> None:
    with http_receiver() as requests_rx, http_receiver() as everything_rx:
        n = notifier(
            WebhookSink(WebhookConfig(requests_rx.url, events=("request.*",)), "n1"),
            WebhookSink(WebhookConfig(everything_rx.url), "n1", 2),
        )
        n.start()
        n.send(Notification("alert.mfa-failures", 1.0, "node", "alice", {"failures": 4}))
        n.send(Notification(REQUEST_CREATED, 2.0, "alice", "request #1"))
        await eventually(lambda: len(everything_rx.accepted()) == 2, "both events")
        await eventually(requests_rx.accepted, "the request event")
        await n.close()
    # One sink delivers in order, so the alert (sent first) was skipped, not late.
    assert [json.loads(r.body)["event"] for r in requests_rx.accepted()] == ["request.created"]
    assert [json.loads(r.body)["event"] for r in everything_rx.accepted()] == [
        "alert.mfa-failures",
        "request.created",
    ]


async def test_a_receiver_that_fails_once_gets_the_body_once() -> None:
    with http_receiver(script=[503]) as rx:
        audit = AuditLog()
        n = notifier(WebhookSink(WebhookConfig(rx.url), "n1"), audit=audit)
        n.start()
        n.send(approved())
        await eventually(rx.accepted, "the retried delivery")
        await n.close()
    first, second = rx.all()
    assert (first.status, second.status) == (503, 200)
    assert first.body == second.body  # the same bytes, the same delivery id
    assert len(rx.accepted()) == 1
    assert n.counts == {"retried": 1, "delivered": 1}
    assert audit.rows == []


async def test_a_dead_receiver_delays_nothing_and_is_audited() -> None:
    audit = AuditLog()
    sink = WebhookSink(WebhookConfig(f"http://127.0.0.1:{closed_port()}/hook"), "n1")
    n = notifier(sink, audit=audit)
    n.start()
    note = approved()
    n.send(note)
    # send() only queued it: no attempt has been made yet, the caller goes on.
    assert n.pending == 1 and not n.counts and not audit.rows
    await eventually(lambda: audit.rows, "the notify.failed audit")
    [(actor, action, subject, details)] = audit.rows
    assert (actor, action, subject) == ("notify", actions.NOTIFY_FAILED, "webhook[1]:127.0.0.1")
    assert details["event"] == "request.approved" and details["id"] == note.id
    assert details["attempts"] == 5
    assert "refused" in details["error"].lower()
    assert n.counts == {"retried": 4, "failed": 1}
    assert [r.outcome for r in n.recent] == ["retried"] * 4 + ["failed"]
    await n.close()


async def test_a_hung_receiver_holds_back_no_other_sink() -> None:
    with silent_listener() as port, http_receiver() as rx:
        audit = AuditLog()
        n = notifier(
            WebhookSink(WebhookConfig(f"http://127.0.0.1:{port}/", timeout=30), "n1"),
            WebhookSink(WebhookConfig(rx.url), "n1", 2),
            audit=audit,
        )
        n.start()
        n.send(approved())
        await eventually(rx.accepted, "the healthy sink's delivery")
        await eventually(lambda: n.counts["delivered"] == 1, "the healthy sink's answer")
        assert n.pending == 1  # the hung one is still in flight
        await n.close(grace=0.05)
    [(_, action, subject, details)] = audit.rows
    assert (action, subject) == (actions.NOTIFY_FAILED, "webhook[1]:127.0.0.1")
    assert details["error"] == "not delivered before the node stopped"


async def test_a_full_queue_drops_the_oldest_and_audits_it() -> None:
    audit = AuditLog()
    sink = WebhookSink(WebhookConfig(f"http://127.0.0.1:{closed_port()}/"), "n1")
    n = Notifier([sink], audit, retry_delays=FAST, max_pending=2)
    n.start()
    notes = [Notification("alert.test", float(i), "node") for i in range(3)]
    for note in notes:
        n.send(note)
    assert n.pending == 2
    await asyncio.sleep(0)  # the drop's audit task runs
    assert audit.rows[0][3]["id"] == notes[0].id
    assert audit.rows[0][3]["error"] == "queue full (2 pending)"
    await n.close(grace=0)


async def test_send_from_another_thread_is_queued_on_the_loop() -> None:
    with http_receiver() as rx:
        n = notifier(WebhookSink(WebhookConfig(rx.url), "n1"))
        n.start()
        await asyncio.to_thread(n.send, approved())
        await eventually(rx.accepted, "the delivery")
        await n.close()


def test_details_must_be_json_values() -> None:
    with pytest.raises(ValueError, match="JSON values"):
        Notification("alert.x", 0.0, "node", details={"when": object()})
    with pytest.raises(ValueError, match="without spaces"):
        Notification("alert x", 0.0, "node")
    details = {"list": [1]}
    n = Notification("alert.x", 0.0, "node", details=details)
    details["list"].append(2)
    assert n.details == {"list": [1]}
