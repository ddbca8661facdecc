"""QueryTracker playbooks: message sequences in, exact records out, no sockets."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import pytest

from bastion.pg import messages as m
from bastion.pg.params import decode_params
from bastion.pg.tracker import QueryRecord, QueryTracker, tag_rows

IDLE, IN_TX, FAILED = m.TransactionStatus


def err(code: str, text: str = "boom") -> m.ErrorResponse:
    return m.ErrorResponse({"S": "ERROR", "V": "ERROR", "C": code, "M": text})


class Play:
    """Feeds ('F', msg) / ('B', msg) steps to a tracker whose clock ticks once per read."""

    def __init__(self) -> None:
        ticks = itertools.count()
        self.tracker = QueryTracker(clock=lambda: float(next(ticks)))
        self.records: list[QueryRecord] = []

    def run(self, steps: Iterable[tuple[str, Any]]) -> list[QueryRecord]:
        """Play the steps; return the records they released."""
        new: list[QueryRecord] = []
        for side, msg in steps:
            if side == "F":
                self.tracker.frontend(msg)
            else:
                new += self.tracker.backend(msg)
        self.records += new
        return new

    def close(self) -> list[QueryRecord]:
        new = self.tracker.close()
        self.records += new
        return new


def F(*msgs: Any) -> list[tuple[str, Any]]:  # reads like the playbook column
    return [("F", x) for x in msgs]


def B(*msgs: Any) -> list[tuple[str, Any]]:
    return [("B", x) for x in msgs]


def extended(sql: str, *params: bytes | None, name: str = "", execute: bool = True) -> list[Any]:
    out: list[Any] = [m.Parse(name, sql), m.Bind("", name, [], list(params)), m.Describe("P", "")]
    return [*out, m.Execute("")] if execute else out


def test_simple_query_with_several_statements() -> None:
    p = Play()
    recs = p.run(
        F(m.Query("SELECT 1; SELECT 2, 3; CREATE TABLE t ()"))
        + B(m.RowDescription([m.FieldDescription("a")]), m.DataRow([b"1"]))
        + B(m.CommandComplete("SELECT 1"), m.RowDescription([]), m.DataRow([b"2", b"3"]))
        + B(m.CommandComplete("SELECT 1"), m.CommandComplete("CREATE TABLE"))
        + B(m.ReadyForQuery(IDLE))
    )
    (r,) = recs
    assert r.kind == "simple" and r.sql == "SELECT 1; SELECT 2, 3; CREATE TABLE t ()"
    assert r.tags == ("SELECT 1", "SELECT 1", "CREATE TABLE") and r.tag == "CREATE TABLE"
    assert r.rows == 2 and r.tx_status is IDLE and r.error_sqlstate is None and r.completed
    assert r.started_at < r.finished_at


def test_simple_query_stops_at_first_error() -> None:
    p = Play()
    (r,) = p.run(
        F(m.Query("BEGIN; SELECT 1/0; SELECT 2"))
        + B(m.CommandComplete("BEGIN"), err("22012", "division by zero"), m.ReadyForQuery(FAILED))
    )
    assert r.tags == ("BEGIN",) and r.error_sqlstate == "22012"
    assert r.error_message == "division by zero" and r.tx_status is FAILED


def test_empty_query() -> None:
    (r,) = Play().run(F(m.Query("")) + B(m.EmptyQueryResponse(), m.ReadyForQuery(IDLE)))
    assert r.tag is None and r.rows is None and r.tags == ()


def test_extended_query_with_parameters() -> None:
    p = Play()
    (r,) = p.run(
        F(*extended("SELECT $1, $2, $3", b"42", None, b"\xff"), m.Sync())
        + B(m.ParseComplete(), m.BindComplete(), m.RowDescription([]))
        + B(m.DataRow([b"42", None, b"x"]), m.CommandComplete("SELECT 1"), m.ReadyForQuery(IDLE))
    )
    assert r.kind == "extended" and r.sql == "SELECT $1, $2, $3"
    assert r.params == ("42", None, b"\xff") and r.tag == "SELECT 1" and r.rows == 1
    assert (r.statement, r.portal, r.tx_status) == ("", "", IDLE)
    assert p.tracker.unmatched == 0 and p.tracker.in_flight == 0


def test_binary_parameters_stay_bytes() -> None:
    assert decode_params([b"\x00\x2a", b"txt"], [1, 0]) == (b"\x00\x2a", "txt")
    assert decode_params([b"\x00\x2a", b"txt"], [1]) == (b"\x00\x2a", b"txt")
    assert decode_params([b"a", None], []) == ("a", None)


def test_named_statement_reused_later() -> None:
    p = Play()
    p.run(
        F(m.Parse("s1", "UPDATE t SET a = $1"), m.Sync())
        + B(m.ParseComplete(), m.ReadyForQuery(IDLE))
    )
    (r,) = p.run(
        F(m.Bind("p", "s1", [], [b"7"]), m.Execute("p"), m.Sync())
        + B(m.BindComplete(), m.CommandComplete("UPDATE 3"), m.ReadyForQuery(IDLE))
    )
    assert (r.sql, r.params, r.statement, r.portal, r.rows) == (
        "UPDATE t SET a = $1",
        ("7",),
        "s1",
        "p",
        3,
    )


def test_pipelined_batches_and_error_skips_to_sync() -> None:
    p = Play()
    steps = F(
        *extended("INSERT 1", b"1"),
        m.Parse("bad", "SELEC oops"),
        m.Bind("", "bad", [], []),
        m.Execute(""),
        *extended("INSERT 3", b"3"),
        m.Sync(),
        *extended("INSERT 4", b"4"),
        m.Sync(),
    )
    steps += B(m.ParseComplete(), m.BindComplete(), m.NoData(), m.CommandComplete("INSERT 0 1"))
    steps += B(err("42601", "syntax error"), m.ReadyForQuery(IDLE))
    steps += B(m.ParseComplete(), m.BindComplete(), m.NoData(), m.CommandComplete("INSERT 0 1"))
    steps += B(m.ReadyForQuery(IDLE))
    recs = p.run(steps)
    assert [(r.sql, r.tag, r.error_sqlstate) for r in recs] == [
        ("INSERT 1", "INSERT 0 1", None),
        ("SELEC oops", None, "42601"),
        ("INSERT 4", "INSERT 0 1", None),
    ]
    assert p.tracker.unmatched == 0
    # the failed Parse did not create "bad", so a later Bind to it has no SQL
    (r,) = p.run(
        F(m.Bind("", "bad", [], []), m.Execute(""), m.Sync())
        + B(err("26000", "prepared statement does not exist"), m.ReadyForQuery(IDLE))
    )
    assert r.sql is None and r.error_sqlstate == "26000"


def test_messages_arriving_after_the_error_are_skipped_until_sync() -> None:
    p = Play()
    recs = p.run(
        F(*extended("SELECT 1/0"))
        + B(m.ParseComplete(), m.BindComplete(), m.NoData(), err("22012"))
        + F(*extended("INSERT skipped"), m.Sync())
        + B(m.ReadyForQuery(IDLE))
        + F(*extended("SELECT 2"), m.Sync())
        + B(m.ParseComplete(), m.BindComplete(), m.NoData(), m.CommandComplete("SELECT 1"))
        + B(m.ReadyForQuery(IDLE))
    )
    assert [(r.sql, r.error_sqlstate) for r in recs] == [
        ("SELECT 1/0", "22012"),
        ("SELECT 2", None),
    ]
    assert p.tracker.unmatched == 0


def test_skipped_definitions_are_rolled_back() -> None:
    p = Play()
    p.run(F(m.Parse("s", "SELECT 'old'"), m.Sync()) + B(m.ParseComplete(), m.ReadyForQuery(IDLE)))
    p.run(
        F(m.Parse("x", "SELECT 1/0"), m.Close("S", "s"), m.Parse("s", "SELECT 'new'"), m.Sync())
        + B(err("42000"), m.ReadyForQuery(IDLE))
    )
    (r,) = p.run(
        F(m.Bind("", "s", [], []), m.Execute(""), m.Sync())
        + B(m.BindComplete(), m.CommandComplete("SELECT 1"), m.ReadyForQuery(IDLE))
    )
    assert r.sql == "SELECT 'old'"


def test_error_at_sync_is_recorded() -> None:
    """A deferred constraint can fail at the implicit COMMIT that Sync performs."""
    recs = Play().run(
        F(*extended("INSERT"), m.Sync())
        + B(m.ParseComplete(), m.BindComplete(), m.NoData(), m.CommandComplete("INSERT 0 1"))
        + B(err("23503", "violates foreign key"), m.ReadyForQuery(IDLE))
    )
    assert [(r.kind, r.sql, r.error_sqlstate) for r in recs] == [
        ("extended", "INSERT", None),
        ("extended", None, "23503"),
    ]


def test_portal_suspended_then_resumed() -> None:
    p = Play()
    recs = p.run(
        F(m.Parse("", "SELECT * FROM big"), m.Bind("c", "", [], []), m.Execute("c", 2), m.Flush())
        + B(m.ParseComplete(), m.BindComplete(), m.DataRow([b"1"]), m.DataRow([b"2"]))
        + B(m.PortalSuspended())
        + F(m.Execute("c", 2), m.Sync())
        + B(m.DataRow([b"3"]), m.CommandComplete("SELECT 1"), m.ReadyForQuery(IN_TX))
    )
    assert [(r.suspended, r.rows, r.tag, r.tx_status) for r in recs] == [
        (True, 2, None, IN_TX),
        (False, 1, "SELECT 1", IN_TX),
    ]
    assert all(r.sql == "SELECT * FROM big" for r in recs)


def test_copy_in_through_simple_query() -> None:
    p = Play()
    (r,) = p.run(
        F(m.Query("COPY t FROM STDIN"))
        + B(m.CopyInResponse(0, [0, 0]))
        + F(m.CopyData(b"1\ta\n2\tb\n"), m.CopyData(b"3\tc\n"), m.CopyDone())
        + B(m.CommandComplete("COPY 3"), m.ReadyForQuery(IDLE))
    )
    assert (r.kind, r.copy_direction, r.copy_bytes, r.copy_messages, r.rows) == (
        "copy",
        "in",
        12,
        2,
        3,
    )


def test_copy_fail() -> None:
    (r,) = Play().run(
        F(m.Query("COPY t FROM STDIN"))
        + B(m.CopyInResponse())
        + F(m.CopyData(b"x"), m.CopyFail("client gave up"))
        + B(err("57014", "COPY from stdin failed"), m.ReadyForQuery(IDLE))
    )
    assert (r.kind, r.error_sqlstate, r.copy_bytes) == ("copy", "57014", 1)


def test_copy_out_through_extended_protocol() -> None:
    (r,) = Play().run(
        F(*extended("COPY t TO STDOUT"), m.Sync())
        + B(m.ParseComplete(), m.BindComplete(), m.NoData(), m.CopyOutResponse(0, [0]))
        + B(m.CopyData(b"1\n"), m.CopyData(b"22\n"), m.CopyDone(), m.CommandComplete("COPY 2"))
        + B(m.ReadyForQuery(IDLE))
    )
    assert (r.kind, r.copy_direction, r.copy_bytes, r.copy_messages, r.rows) == (
        "copy",
        "out",
        5,
        2,
        2,
    )


def test_rows_returned_is_the_largest_statement_sent_to_the_client() -> None:
    """``returned`` feeds ``[alerts] statement_rows``: rows sent, not rows affected."""
    p = Play()
    (many,) = p.run(
        F(m.Query("SELECT a FROM t; UPDATE t SET a = 1; SELECT 1"))
        + B(m.RowDescription([]), *(m.DataRow([b"x"]) for _ in range(3)))
        + B(m.CommandComplete("SELECT 3"), m.CommandComplete("UPDATE 500"))
        + B(m.RowDescription([]), m.DataRow([b"1"]), m.CommandComplete("SELECT 1"))
        + B(m.ReadyForQuery(IDLE))
    )
    assert (many.rows, many.returned) == (504, 3)
    (copy_out,) = p.run(
        F(m.Query("COPY t TO STDOUT"))
        + B(m.CopyOutResponse(0, [0]), m.CopyData(b"1\n"), m.CopyDone())
        + B(m.CommandComplete("COPY 40"), m.ReadyForQuery(IDLE))
    )
    assert copy_out.returned == 40
    (copy_in,) = p.run(
        F(m.Query("COPY t FROM STDIN"))
        + B(m.CopyInResponse(0, [0]))
        + F(m.CopyData(b"1\n"), m.CopyDone())
        + B(m.CommandComplete("COPY 1"), m.ReadyForQuery(IDLE))
    )
    assert copy_in.returned == 0


def test_function_call() -> None:
    (r,) = Play().run(
        F(m.FunctionCall(1598, [0], [b"x"]))
        + B(m.FunctionCallResponse(b"y"), m.ReadyForQuery(IDLE))
    )
    assert (r.kind, r.function_oid, r.params, r.sql) == ("function", 1598, ("x",), None)


def test_error_without_request_is_emitted_at_once() -> None:
    p = Play()
    (r,) = p.run(B(err("28P01", "password authentication failed")))
    assert (r.kind, r.sql, r.error_sqlstate, r.tx_status) == ("error", None, "28P01", None)


def test_close_releases_unanswered_requests() -> None:
    p = Play()
    p.run(
        F(*extended("SELECT 1"), *extended("SELECT pg_sleep(100)"), m.Sync(), m.Query("SELECT 3"))
        + B(m.ParseComplete(), m.BindComplete(), m.NoData(), m.CommandComplete("SELECT 1"))
    )
    recs = p.close()
    assert [(r.sql, r.completed, r.tx_status) for r in recs] == [
        ("SELECT 1", True, None),
        ("SELECT pg_sleep(100)", False, None),
        ("SELECT 3", False, None),
    ]
    assert p.tracker.in_flight == 0


def test_unmatched_server_messages_are_counted_not_raised() -> None:
    p = Play()
    p.run(B(m.ParseComplete(), m.DataRow([]), m.CommandComplete("X"), m.CopyInResponse()))
    assert p.tracker.unmatched == 4
    (r,) = p.run(F(m.Parse("", "x"), m.Execute(""), m.Sync()) + B(m.ReadyForQuery(IDLE)))
    assert p.tracker.unmatched == 6 and p.tracker.in_flight == 0  # resynchronised on Sync
    assert (r.sql, r.completed, r.tx_status) == (None, False, IDLE)


def test_initial_ready_for_query_sets_status() -> None:
    p = Play()
    assert p.run(B(m.AuthenticationOk(), m.ParameterStatus("a", "b"), m.ReadyForQuery(IDLE))) == []
    assert p.tracker.tx_status is IDLE


def test_statement_names_are_bounded() -> None:
    ticks = itertools.count()
    tracker = QueryTracker(clock=lambda: float(next(ticks)), max_names=3)
    for i in range(10):
        tracker.frontend(m.Parse(f"s{i}", f"SELECT {i}"))
    tracker.frontend(m.Bind("", "s0", [], []))
    tracker.frontend(m.Bind("", "s9", [], []))
    tracker.frontend(m.Execute(""))
    (r,) = tracker.close()
    assert r.sql == "SELECT 9"


@pytest.mark.parametrize(
    ("tag", "rows"),
    [
        ("SELECT 5", 5),
        ("INSERT 0 7", 7),
        ("UPDATE 0", 0),
        ("COPY 12", 12),
        ("MERGE 2", 2),
        ("CREATE TABLE", None),
        ("BEGIN", None),
        ("SELECT", None),
    ],
)
def test_tag_rows(tag: str, rows: int | None) -> None:
    assert tag_rows(tag) == rows
