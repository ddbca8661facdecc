"""The pure session state machine: every legal path, every illegal step, first end wins."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.session.lifecycle import Lifecycle, LifecycleError, Phase

pytestmark = pytest.mark.timeout(60)

A, R, L, E, D = Phase.ADMITTED, Phase.RECORDING, Phase.LIVE, Phase.ENDING, Phase.ENDED
ORDER = [A, R, L, E, D]


def test_the_whole_life_of_a_session() -> None:
    life = Lifecycle()
    assert (life.phase, life.recorded, life.ending) == (A, False, False)
    life.recording_started()
    assert (life.phase, life.recorded) == (R, True)
    assert life.went_live() is True
    assert life.end("exit", "bye") is True
    assert (life.phase, life.end_reason, life.end_message, life.ending) == (E, "exit", "bye", True)
    assert life.finished() is True
    assert life.history == [A, R, L, E, D]
    assert life.ending


def test_ended_before_any_recording() -> None:
    life = Lifecycle()
    assert life.end("client-closed")
    assert life.finished()
    assert life.history == [A, E, D] and not life.recorded


def test_ended_while_recording_never_goes_live() -> None:
    life = Lifecycle()
    life.recording_started()
    assert life.end("admin-terminated")
    assert life.went_live() is False
    assert life.phase is E
    assert life.finished()
    assert life.history == [A, R, E, D]


def test_recording_started_while_ending_stays_ending_and_recorded() -> None:
    life = Lifecycle()
    assert life.end("node-stop")
    life.recording_started()
    assert (life.phase, life.recorded, life.end_reason) == (E, True, "node-stop")
    assert life.went_live() is False
    assert life.finished()
    assert life.history == [A, E, D]


def test_went_live_after_the_end_is_false_even_when_ended() -> None:
    life = Lifecycle()
    life.recording_started()
    life.end("policy")
    life.finished()
    assert life.went_live() is False
    assert life.history == [A, R, E, D]


def test_first_end_wins_later_ends_return_false() -> None:
    life = Lifecycle()
    life.recording_started()
    life.went_live()
    assert life.end("admin-terminated", "terminated by root: audit") is True
    assert life.end("client-closed") is False
    assert life.end("grant-revoked", "gone") is False
    assert (life.end_reason, life.end_message) == ("admin-terminated", "terminated by root: audit")
    assert life.finished() is True
    assert life.end("idle-timeout") is False
    assert life.end_reason == "admin-terminated"


def test_finishing_twice_is_false_the_second_time() -> None:
    life = Lifecycle()
    life.end("exit")
    assert life.finished() is True
    assert life.finished() is False
    assert life.history == [A, E, D]


@pytest.mark.parametrize(
    ("steps", "illegal"),
    [
        ([], "went_live"),  # live before any recording
        ([], "finished"),  # finished without an end
        (["recording_started"], "recording_started"),  # twice
        (["recording_started"], "finished"),
        (["recording_started", "went_live"], "recording_started"),
        (["recording_started", "went_live"], "finished"),
        (["recording_started", "went_live"], "went_live"),  # live twice
        (["end", "finished"], "recording_started"),  # after the end is final
    ],
)
def test_illegal_steps_raise_and_change_nothing(steps: list[str], illegal: str) -> None:
    life = Lifecycle()
    for step in steps:
        _do(life, step)
    before = (life.phase, list(life.history), life.end_reason, life.recorded)
    with pytest.raises(LifecycleError, match=life.phase.value):
        _do(life, illegal)
    assert (life.phase, list(life.history), life.end_reason, life.recorded) == before


def _do(life: Lifecycle, step: str, reason: str = "r") -> object:
    if step == "end":
        return life.end(reason)
    return getattr(life, step)()


STEPS = st.lists(
    st.tuples(
        st.sampled_from(["recording_started", "went_live", "end", "finished"]),
        st.sampled_from(["client-closed", "admin-terminated", "node-stop", "policy"]),
    ),
    max_size=12,
)


@settings(max_examples=400, deadline=None)
@given(STEPS)
def test_random_steps_keep_the_invariants(steps: list[tuple[str, str]]) -> None:
    life = Lifecycle()
    first_reason: str | None = None
    for step, reason in steps:
        before = (life.phase, list(life.history), life.end_reason, life.recorded)
        try:
            result = _do(life, step, reason)
        except LifecycleError:
            # an illegal step changes nothing at all
            assert (life.phase, list(life.history), life.end_reason, life.recorded) == before
            continue
        if step == "end":
            assert result is (first_reason is None)
            if first_reason is None:
                first_reason = reason
        # phases never go backwards, and each step moves at most one phase
        ranks = [ORDER.index(p) for p in life.history]
        assert ranks == sorted(ranks) and len(set(ranks)) == len(ranks)
        assert life.history[0] is A and life.history[-1] is life.phase
        # the end reason is set exactly once, by the first end, and never changes
        assert life.end_reason == first_reason
        assert (life.end_reason is not None) == life.ending
        # finished only after an end; live only after a recording
        if life.phase is D:
            assert E in life.history and life.end_reason is not None
        if L in life.history:
            assert R in life.history and life.recorded
        assert life.recorded or not before[3]  # a recording once made stays made
