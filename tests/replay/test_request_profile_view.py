"""A request naming an access profile in the console: the row, the detail pane, the wire."""

from __future__ import annotations

import json
from dataclasses import replace

from bastion.control.messages import request_from_wire, request_to_wire
from replay.screens.requests import request_row
from replay.widgets.request_detail import describe_request
from tests.replay.sample_source import NOW, _request


def test_profile_request_shows_the_profile_and_what_it_reaches_now() -> None:
    r = replace(
        _request(14, "alice", "", 7200, "deploy", "pending", NOW - 60),
        targets=(), profile="staging-web", reaches=("web1", "web3"),
    )  # fmt: skip
    assert request_from_wire(json.loads(json.dumps(request_to_wire(r)))) == r
    cells = [c.plain for c in request_row(r)]
    assert cells[3] == "@staging-w…"  # the 11-column cell; the pane has it whole
    text = describe_request(r, NOW).plain
    assert "alice → profile staging-web" in text
    assert "profile staging-web reaches now: web1, web3" in text
    plain = _request(15, "bob", "web1", 600, "x", "pending", NOW)
    assert "reaches now" not in describe_request(plain, NOW).plain
