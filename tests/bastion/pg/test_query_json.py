"""The relay's direct ``pg.query`` encoding is byte for byte the canonical one.

``query_json`` skips the payload dict and the generic encoder for the common
record; a recording written through it must be indistinguishable from one written
through ``query_payload`` + ``canonical_json`` (the hash chain, the readers and the
recording-equivalence golden files all see the bytes).
"""

from __future__ import annotations

from typing import get_args

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.pg.messages import TransactionStatus
from bastion.pg.query_log import query_json, query_payload
from bastion.pg.tracker import QueryKind, QueryRecord
from recorder.codec import canonical_json

_texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
    st.sampled_from(['a"b', "back\\slash", "tab\tnew\nline", "\x00\x1f\x7f", "é", "\udcff"]),
)
_opt_texts = st.none() | _texts
_params = st.lists(
    st.none() | _texts | st.binary(max_size=8) | st.text(min_size=4090, max_size=4100),
    max_size=6,
)
_times = st.one_of(
    st.floats(min_value=0, max_value=1e6, allow_nan=False),
    st.floats(min_value=0, max_value=1e-3, allow_nan=False),
    st.integers(min_value=0, max_value=10**6),
)


@st.composite
def records(draw: st.DrawFn) -> QueryRecord:
    started = draw(_times)
    return QueryRecord(
        kind=draw(st.sampled_from(get_args(QueryKind))),
        sql=draw(_opt_texts),
        params=tuple(draw(_params)),
        statement=draw(_opt_texts),
        portal=draw(_opt_texts),
        tag=draw(_opt_texts),
        tags=tuple(draw(st.lists(_texts, max_size=3))),
        rows=draw(st.none() | st.integers(min_value=0, max_value=2**63)),
        error_sqlstate=draw(st.none() | st.just("42P01")),
        error_message=draw(st.none() | _texts),
        started_at=started,
        finished_at=started + draw(_times),
        tx_status=draw(st.none() | st.sampled_from(list(TransactionStatus))),
        completed=draw(st.booleans()),
        suspended=draw(st.booleans()),
        copy_direction=draw(st.none() | st.sampled_from(["in", "out", "both"])),
        copy_bytes=draw(st.integers(min_value=0, max_value=10**9)),
        copy_messages=draw(st.integers(min_value=0, max_value=10**6)),
        function_oid=draw(st.none() | st.integers(min_value=1, max_value=2**32)),
    )


@settings(max_examples=600, deadline=None)
@given(
    records(),
    st.integers(min_value=1, max_value=2**40),
    st.none() | st.integers(min_value=1, max_value=2**40),
)
def test_direct_encoding_is_the_canonical_one(
    rec: QueryRecord, seq: int, sql_ref: int | None
) -> None:
    direct = query_json(seq, rec, sql_ref)
    if direct is not None:
        assert direct == canonical_json(query_payload(seq, rec, sql_ref))


def _pgbench(**changes: object) -> QueryRecord:
    rec = QueryRecord(
        kind="extended",
        sql="SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
        params=("12345",),
        statement="P_0",
        tag="SELECT 1",
        tags=("SELECT 1",),
        rows=1,
        started_at=12.3456789,
        finished_at=12.3457891,
        tx_status=TransactionStatus.IDLE,
    )
    for name, value in changes.items():
        setattr(rec, name, value)
    return rec


def test_the_common_records_take_the_direct_path() -> None:
    """What pgbench, psql and psycopg send in the common case is not left to the slow path
    (else the direct encoder would be dead code that the property test cannot see fail)."""
    for rec in (
        _pgbench(),
        _pgbench(kind="simple", params=(), statement=None, sql="BEGIN; UPDATE t SET a = 1;"),
        _pgbench(params=(None, 'quote " and \\ and \n')),
        _pgbench(tx_status=None, rows=None, tag=None, tags=(), completed=False),
    ):
        for sql_ref in (None, 3):  # a prepared statement's later runs refer to its text
            direct = query_json(7, rec, sql_ref)
            assert direct is not None
            assert direct == canonical_json(query_payload(7, rec, sql_ref))


def test_uncommon_records_are_left_to_the_canonical_encoder() -> None:
    for rec in (
        _pgbench(sql="SELECT 'é'"),
        _pgbench(params=(b"\x00\x01",)),
        _pgbench(params=("x" * 5000,)),
        _pgbench(error_sqlstate="42P01", error_message="relation does not exist"),
        _pgbench(copy_direction="out"),
        _pgbench(function_oid=1234),
        _pgbench(started_at=float("inf")),
    ):
        assert query_json(7, rec) is None
