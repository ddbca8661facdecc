"""The guardrails' literal key: a cheap stand-in for ``shape_of`` that must never join
two texts the rules treat differently.

``literal_key`` blanks string literals and makes every digit 0 with C-speed string
operations; the memo trusts a key only when ``trusts_key`` checked it (on the key
itself, and against libpg_query's ``normalize``, ``shape_of``) for a text with that
key. The property checked here, over pgbench's statements, the guardrail tests'
statements, tricky literals and random token soups: whenever a text ``b`` has the
trusted key of a text ``a`` whose shape decides, ``b`` parses into the same statements
with the same classes and tables (so every rule judges it as ``a``); and a session
judged with the key gives exactly the decisions of one judged without it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.policy import hook as hook_module
from bastion.policy.rules import Policy, Rule, RuleKind
from bastion.policy.sql import (
    escape_string_reading,
    literal_key,
    parse_statements,
    shape_of,
    trusts_key,
)
from bastion.session.hooks import Decision, Verdict
from tests.bastion.policy.standalone import standalone_policy_hook
from tests.bastion.policy.test_sql import CASES

# pgbench's built-in scripts (select-only, tpcb-like, simple-update), literals as {}
PGBENCH = [
    "SELECT abalance FROM pgbench_accounts WHERE aid = {};",
    "UPDATE pgbench_accounts SET abalance = abalance + {} WHERE aid = {};",
    "UPDATE pgbench_tellers SET tbalance = tbalance + {} WHERE tid = {};",
    "UPDATE pgbench_branches SET bbalance = bbalance + {} WHERE bid = {};",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES ({}, {}, {}, {}, CURRENT_TIMESTAMP);",
    "BEGIN;",
    "END;",
]

# Statements whose literals sit where the grammar or the classifier reads their
# value, or where normalize leaves them: none may share a trusted key across values.
TRICKY = [
    "select {}::float({})",  # float(0) and float(54) do not parse
    "select {}::varchar({})",
    "select {}::numeric({}, {})",
    "alter table t alter {} set statistics {}",  # column number 0 does not parse
    "fetch {} from c",
    "move {} in c",
    "select {} order by {}",
    "select * from t limit {} offset {}",
    "select {} from t group by {}",
    "select set_config({}, {}, false)",  # the literal is the class
    "explain (analyze {}) delete from t",
    "copy t to {}",
    "copy t from program {}",
    "create role r password {}",
    "set work_mem = {}",
    "set role {}",
    "select interval {}",
    "select interval({}) {}",
    "select {}\n{}",  # one literal, continued over a newline
    "select {} {}",
    "select * from t where a = {} and b in ({}, {}, {})",
    "delete from t where {} = {}",  # no column: delete-without-where, whatever the values
    "delete from t where id = {}",
    "update t set a = {} where {}",
    "select * from secret where id = {}",
    "select * from pii.people where id = {}",
    "insert into audit_log values ({}, {})",
    "lock table pgbench_tellers in {} mode",
    "select x -{}, - {}, +{}, {}-{}",
    "select {}::int4, int4 {}, {}::text",
    "select t{}.c from t{}",
    "select 1; drop table t{}",
    "select {}; delete from t where id = {}",
    "values ({}), ({})",
    "select * from t where a between {} and {}",
    "create table t (c char({}))",
    "create sequence s increment by {}",
    "select {}::bit({})",
    "with x as (select {}) select * from x",
    "prepare p as select {}",
    "execute p({})",
    "select * from generate_series({}, {})",
    "select case when a = {} then {} else {} end from t",
    "do {}",
]

# literal values: ordinary, boundaries, and strings that must stop a key
INTS = ["0", "1", "7", "54", "32767", "32768", "999999999", "1000000000", "2147483648", "-1"]
FLOATS = ["1.5", ".5", "1e5", "1.", "0.0"]
STRINGS = [
    "''",
    "'x'",
    "'role'",
    "'work_mem'",
    "'ROLE'",
    "'it''s'",
    "'a'\n'b'",
    "'; drop table t'",
    "'--'",
    "'/*'",
    "'off'",
    "'true'",
    "'$$'",
    "E'\\x41'",
    "e'x'",
    "U&'d!0061t' UESCAPE '!'",
    "N'x'",
    "B'101'",
    "X'1F'",
    "$$drop table t$$",
    "$a$x$a$",
    "'\u00e9'",
    "'a\\'",
    "'unterminated",
]
IDENTS = ["a", "t", '"1"', '"x y"', "t1", "_9", "pgbench_accounts"]
VALUES = INTS + FLOATS + STRINGS + IDENTS
PLAIN = ["0", "1", "7", "54", "999999999", "''", "'x'", "'role'", "'it''s'", "'off'"]
"""Values a key blanks: drawn more often, so that texts really share keys."""


def _facets(text: str) -> list[tuple[frozenset[str], tuple[tuple[str, str | None], ...]]]:
    return [(s.classes, s.facets) for s in parse_statements(text).statements]


def _trusted(text: str) -> str | None:
    """The key the memo keeps for ``text`` (None: it keeps none)."""
    if not parse_statements(text).shape_decides:
        return None
    shape, key = shape_of(text), literal_key(text)
    return key if shape is not None and key is not None and trusts_key(key, shape) else None


def _fill(template: str, values: list[str]) -> str:
    return template.format(*values)


def _corpus(seed: int, per_template: int) -> Iterator[str]:
    rnd = random.Random(seed)
    for template in PGBENCH + TRICKY:
        slots = template.count("{}")
        for _ in range(per_template):
            values = [rnd.choice(PLAIN if rnd.random() < 0.7 else VALUES) for _ in range(slots)]
            yield _fill(template, values)
    for text, _ in CASES:
        yield text


def _check_pairs(texts: list[str]) -> int:
    """Every text sharing a trusted key parses like the text that key came from."""
    trusted: dict[str, str] = {}
    for text in texts:
        key = _trusted(text)
        if key is not None:
            trusted.setdefault(key, text)
    shared = 0
    for b in texts:
        key = literal_key(b)
        a = trusted.get(key) if key is not None else None
        if a is None:
            continue
        assert _facets(b) == _facets(a), (a, b)
        assert parse_statements(b).shape_decides, (a, b)
        shared += a != b
    return shared


def test_statements_sharing_a_trusted_key_parse_alike() -> None:
    texts = list(_corpus(seed=17, per_template=60))
    assert _check_pairs(texts) > 500  # the corpus really pairs texts


@pytest.mark.parametrize("template", PGBENCH[:5])
def test_pgbench_statements_share_a_key_across_values(template: str) -> None:
    """A sign and the number of digits are text: pgbench's deltas (-5000..5000) and
    accounts (1..100000 x scale) give a few keys per statement, each trusted once."""
    slots = template.count("{}")
    a = _fill(template, ["12345", "4000", "7", "3", "1"][:slots])
    b = _fill(template, ["54321", "4999", "9", "8", "0"][:slots])
    key = _trusted(a)
    assert key is not None and key == literal_key(b) and key == _trusted(b)


@pytest.mark.parametrize(
    "text",
    [
        "select $$x$$",
        "select $1",
        "select E'x'",
        "select e'x'",
        "select U&'x'",
        "select N'x'",
        "select B'1'",
        "select X'1F'",
        "select int4'5'",
        "select 'a\\' || E'\\''",
        'select "1" from t',
        "select 1 -- 2",
        "select 1 /* 2 */",
        "select 'caf\u00e9'",
        "select 'a",
        "select 'a''",
        "select\x0b1",
        "select\x0c1",
        "select 'a\x01'",
        "select * from t1",  # t1 and t2 share a key: never trusted
        "select c2 from t",
        "select 1.5",
        "select 1e5",
        "select 1234567890",  # ten digits: int4 or int8 by value
        "select 0x1F",
        "select 0o17",
        "select 1_000",
        "select 1 order by 1",  # normalize keeps the 1 of ORDER BY
        "select 1::float(5)",  # and typmods: float(0) does not parse
        "select 'a'\n'b'",  # one constant in two pieces
        "copy t to 'x'",
        "fetch 10 from c",
        "alter table t alter 1 set statistics 5",
    ],
)
def test_keys_are_trusted_only_where_the_regex_lexes_like_postgres(text: str) -> None:
    assert _trusted(text) is None


def test_constants_the_key_keeps_as_written_do_not_stop_it() -> None:
    text = "select true, null from t where a = 3 and b = false and c = 'x'"
    key = _trusted(text)
    assert key is not None and key == literal_key(text.replace("3", "4").replace("x", "yz"))
    assert literal_key(text.replace("false", "true")) != key


def test_integers_keep_their_token_type_in_the_key() -> None:
    assert _trusted("select 999999999") == literal_key("select 123456789") is not None
    assert literal_key("select 1") != literal_key("select 10")  # a digit count is text
    assert literal_key("select 'x'") != literal_key("select 1")
    assert literal_key("select 'caf\u00e9'") is None
    assert literal_key("select 1\x00") is None


token = st.one_of(
    st.sampled_from(
        [
            "select",
            "from",
            "where",
            "delete",
            "update",
            "set",
            "insert",
            "into",
            "values",
            "drop",
            "table",
            "t",
            "secret",
            "pgbench_accounts",
            "a",
            "=",
            "<",
            "-",
            "+",
            "*",
            ",",
            "(",
            ")",
            ";",
            "::",
            "float",
            "varchar",
            "limit",
            "order",
            "by",
            "and",
            "or",
            "explain",
            "analyze",
            "set_config",
            "copy",
            "to",
            "fetch",
            "alter",
            "column",
            "statistics",
            "lock",
            "in",
            "mode",
            "\n",
            "  ",
        ]  # fmt: skip
    ),
    st.just("{}"),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(token, min_size=1, max_size=14),
    st.lists(st.sampled_from(VALUES), min_size=14, max_size=14),
    st.lists(st.sampled_from(VALUES), min_size=14, max_size=14),
)
def test_random_token_soups_sharing_a_trusted_key_parse_alike(
    tokens: list[str], first: list[str], second: list[str]
) -> None:
    template = " ".join(tokens)
    slots = template.count("{}")
    a, b = _fill(template, first[:slots]), _fill(template, second[:slots])
    key = _trusted(a)
    if key is not None and literal_key(b) == key:
        assert _facets(b) == _facets(a), (a, b)


# --- the memo with and without the key: the same decisions -------------------------

RULES = [
    Rule("no-drop", RuleKind.SQL, Verdict.DENY, sql_classes=frozenset({"drop"})),
    Rule(
        "no-bulk-delete",
        RuleKind.SQL,
        Verdict.DENY,
        sql_classes=frozenset({"delete-without-where"}),
    ),
    Rule("approve-roles", RuleKind.SQL, Verdict.HOLD, sql_classes=frozenset({"role", "grant"})),
    Rule("no-set-role", RuleKind.SQL, Verdict.DENY, sql_classes=frozenset({"set-role"})),
    Rule("warn-do", RuleKind.SQL, Verdict.WARN, sql_classes=frozenset({"do-block"})),
    Rule(
        "no-secrets",
        RuleKind.SQL,
        Verdict.DENY,
        sql_classes=frozenset({"select"}),
        tables=("secret*",),
    ),
    Rule(
        "warn-audit",
        RuleKind.SQL,
        Verdict.WARN,
        sql_classes=frozenset({"insert"}),
        tables=("audit_*",),
    ),
    Rule("no-copy-file", RuleKind.SQL, Verdict.DENY, sql_classes=frozenset({"copy-file"})),
    Rule("no-unparsable", RuleKind.SQL, Verdict.DENY, sql_classes=frozenset({"unparsable"})),
    Rule(
        "try-maintenance",
        RuleKind.SQL,
        Verdict.DENY,
        sql_classes=frozenset({"maintenance"}),
        shadow=True,
    ),
]


def _session_decisions(texts: list[str]) -> list[tuple[str, str | None, tuple[str, ...], bool]]:
    """Each text's decision in one session, as the relay gets it: the memo first
    (``cached``), the full judgment when it does not know."""

    policy_hook, session = standalone_policy_hook(RULES)
    out = []
    for text in texts:
        found: Decision | None = policy_hook.cached(session, "statement", text)
        memo = found is not None
        if found is None:
            found = asyncio.run(policy_hook.statement(session, text))
        flags = tuple(f.name for f in found.flags)
        out.append((found.verdict.value, found.rule, flags, memo))
    return out


def test_a_session_decides_the_same_with_and_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    texts = list(_corpus(seed=5, per_template=8))  # fewer texts than the memo keeps
    random.Random(3).shuffle(texts)
    with_key = _session_decisions(texts)
    monkeypatch.setattr(hook_module, "literal_key", lambda _text: None)
    without = _session_decisions(texts)
    assert [d[:3] for d in with_key] == [d[:3] for d in without]
    # the memo answered (by key or shape) exactly as often: the key only makes it cheaper
    assert [d[3] for d in with_key] == [d[3] for d in without]
    assert sum(d[3] for d in with_key) > 100


def test_the_memo_learns_keys_from_shapes_and_remembers_refusals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    memo = hook_module._Memo(Policy(tuple(RULES)), (), idle=False)
    allow = Decision(Verdict.ALLOW, hook="policy")
    select = "SELECT abalance FROM pgbench_accounts WHERE aid = {};"
    named = "select * from t1 where id = {}"
    for template in (select, named):
        text = template.format(12345)
        memo.keep(text, allow)
        memo.keep_shape(text, str(shape_of(text)), allow)
    assert memo.find(select.format(123456)) is allow  # another digit count: by shape
    normalized: list[str] = []

    def counted(text: str) -> str | None:
        normalized.append(text)
        return shape_of(text)

    monkeypatch.setattr(hook_module, "shape_of", counted)
    assert memo.find(select.format(54321)) is allow
    assert memo.find(select.format(654321)) is allow  # learnt above
    assert normalized == []
    assert memo.find(named.format(54321)) is allow  # t1's key is not trusted: by shape
    assert normalized == [named.format(54321)]
    assert memo.find("select * from t2 where id = 12345") is None  # t2 is not t1
    assert len(memo.allowed) == 4  # 2 texts, 2 shapes: keys are kept apart, never evict them
    assert len(memo.keys) == 3  # 5 and 6 digits trusted; t0 (t1 and t2 alike) refused


def test_a_backslash_text_is_judged_as_both_string_settings_read_it() -> None:
    """``standard_conforming_strings = off`` turns ``'\\'`` into an open string: the
    hidden delete is denied, never allowed from an exact, key or shape memo hit of a
    harmless text, and a text only the setting-on reading can run is still allowed."""
    rules = [
        Rule(
            "no-secret",
            RuleKind.SQL,
            Verdict.DENY,
            sql_classes=frozenset({"delete", "select"}),
            tables=("secret",),
        )
    ]
    hook, session = standalone_policy_hook(rules)
    benign = "select 'a' , 'b'"
    hidden = "select '\\' , '; delete from secret -- '"
    assert asyncio.run(hook.statement(session, benign)).verdict is Verdict.ALLOW
    assert hook.cached(session, "statement", hidden) is None
    assert asyncio.run(hook.statement(session, hidden)).verdict is Verdict.DENY
    assert escape_string_reading(hidden) == "select ''' , '; delete from secret -- '"
    # unparsable when read with the setting off: only the setting-on reading counts
    assert asyncio.run(hook.statement(session, "select 'C:\\'")).verdict is Verdict.ALLOW
    # E'' strings, dollar quotes and comments read the same either way
    for text in ("select E'\\'' , 'x'", "select $$\\'$$", "select 1 -- \\'"):
        assert escape_string_reading(text) != text
        assert asyncio.run(hook.statement(session, text)).verdict is Verdict.ALLOW
