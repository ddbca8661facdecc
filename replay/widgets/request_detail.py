"""The selected access request in full: what is asked, why, who may still decide, its history.

Why a pane of its own: the table row cuts the reason to fit 80 columns, and an
approver must read the whole reason and see who already approved (and how they
narrowed it) before deciding.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from replay.formatting import format_duration, format_when, one_line
from replay.source import RequestInfo

__all__ = ["RequestDetail", "describe_request"]

_HISTORY_KEEP = 6
"""History lines shown (the newest); the pane stays a few lines tall."""


def describe_request(r: RequestInfo, now: float) -> Text:
    """The pane's text for ``r`` (``now`` says how long until a pending one lapses)."""
    asked = f"profile {r.profile}" if r.profile else ",".join(r.targets)
    what = f"extend grant #{r.extends_grant}" if r.kind == "extend" else asked
    head = f"#{r.id} {r.kind} · {r.requester} → {what}"
    if r.login:
        head += f" as {r.login}"
    if r.options:
        head += f" with {','.join(r.options)}"
    if r.held is None:
        head += f" · for {format_duration(r.duration)}"
    head += f" · {r.state}"
    text = Text(one_line(head, 200), style="bold")
    if r.held is not None:
        text.append(f"\nheld {r.held_kind or 'command'}: ", style="dim")
        text.append(one_line(r.held, 500), style="bold")
        text.append(f"\nsession {r.session_id} (w: watch it live)", style="dim")
    text.append("\nreason: ", style="dim")
    text.append(one_line(r.reason, 500))
    if r.profile:
        text.append(f"\nprofile {r.profile} reaches now: ", style="dim")
        text.append(one_line(", ".join(r.reaches) or "nothing", 300))
    if r.state == "pending":
        left = max(0.0, r.lapses_at - now)
        text.append(f"\nlapses in {format_duration(left)} ({format_when(r.lapses_at)})", "dim")
        who = ", ".join(r.approvers) or "nobody (see the target's --approvers)"
        text.append(f"\nneeds {r.needed} more approval{'s' if r.needed != 1 else ''} from: ")
        text.append(one_line(who, 200))
    elif r.start_at is not None:
        text.append(f"\nasked to start at {format_when(r.start_at)}", "dim")
    for h in r.history[-_HISTORY_KEEP:]:
        text.append(f"\n{format_when(h.at)[5:]} ", "dim")
        text.append(one_line(h.who, 16), "bold")
        text.append(" " + one_line(h.what, 300))
    return text


class RequestDetail(Static):
    """See the module docstring; ``show`` replaces what it displays."""

    def show(self, request: RequestInfo | None, now: float) -> None:
        """Display ``request`` (None: say that there is nothing to show)."""
        self.update(describe_request(request, now) if request else Text("no request selected"))
