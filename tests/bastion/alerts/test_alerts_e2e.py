"""Alerts on a real node with real ssh: the audit row, the webhook and the recording marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recorder import Marker, RecordingReader
from tests.bastion.notify.receivers import http_receiver
from tests.peers.bastion_node import make_harness
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

ONE_PROMPT = ["-o", "NumberOfPasswordPrompts=1"]


def test_mfa_failures_and_session_volume_alerts(tmp_path: Path) -> None:
    with http_receiver() as receiver:
        b = make_harness(
            tmp_path / "node",
            overrides={
                "mfa_failures = 0": "mfa_failures = 2",
                "session_bytes_out = 0": 'session_bytes_out = "1MiB"',
                '# [[notify.webhook]]\n# url = "https://hooks.example.com/bastion"': (
                    f'[[notify.webhook]]\nurl = "{receiver.url}"'
                ),
            },
        )
        try:
            c = b.contractor()
            b.grant(c, "web1")
            wrong = c.wrong_code()
            for _ in range(2):
                r = c.ssh("true", target="web1", code=wrong, extra=ONE_PROMPT)
                assert r.returncode == 255
            (row,) = b.wait_audit(c.name, "alert.mfa-failures")
            assert row.details["failures"] == 2 and row.details["limit"] == 2

            def alerts() -> list[dict[str, object]]:
                bodies = [json.loads(r.body) for r in receiver.accepted()]
                return [x for x in bodies if x.get("event") == "alert.mfa-failures"]

            wait_until(alerts, timeout=15, what="alert.mfa-failures at the webhook")
            assert alerts()[0]["actor"] == c.name

            r = c.ssh("head -c 3000000 /dev/zero", target="web1", timeout=60)
            assert r.returncode == 0 and len(r.stdout) == 3_000_000
            b.wait_audit(c.name, "session.end")
            (volume,) = b.wait_audit(c.name, "alert.session-bytes-out")
            s = b.store.get_session(str(volume.details["session"]))
            assert s is not None and s.recording
            with RecordingReader.open(str(b.config.recordings_dir / s.recording)) as reader:
                labels = [e.label for e in reader.events() if isinstance(e, Marker)]
            assert any(label.startswith("alert session-bytes-out: ") for label in labels)
        finally:
            b.close()
