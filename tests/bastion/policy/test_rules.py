"""Rules and decisions: first match wins, facets, the unanalysable rule, the bypass suite."""

from __future__ import annotations

import pytest

from bastion.policy.rules import (
    Policy,
    PolicyDecision,
    Rule,
    RuleError,
    RuleKind,
    decide_command,
    decide_file,
    decide_sql,
)
from bastion.session.hooks import Verdict

A, W, H, D, T, L = (
    Verdict.ALLOW,
    Verdict.WARN,
    Verdict.HOLD,
    Verdict.DENY,
    Verdict.TERMINATE,
    Verdict.LOCK,
)


def cmd_rule(name: str, *programs: str, action: Verdict = D, **kw: object) -> Rule:
    return Rule(name, RuleKind.COMMAND, action, programs=programs, **kw)  # type: ignore[arg-type]


def sql_rule(name: str, *classes: str, action: Verdict = D, **kw: object) -> Rule:
    return Rule(name, RuleKind.SQL, action, sql_classes=frozenset(classes), **kw)  # type: ignore[arg-type]


def cmd(
    policy: Policy,
    text: str,
    user: str = "alice",
    groups: tuple[str, ...] = (),
    target: str = "web1",
    labels: dict[str, str] | None = None,
    exact: bool = True,
) -> PolicyDecision:
    return decide_command(policy, user, groups, target, labels or {}, text, exact)


NO_RM = Policy((cmd_rule("no-rm", "rm", args_regex=r"-\w*r"),))

# The bypass suite of issue 15 at the decision layer: one case per line.
BYPASS = [
    ("rm -rf X", D),
    ("ls; rm -rf X", D),
    ("true && rm -rf X", D),
    ("false || rm -rf X", D),
    ("ls | rm -rf X", D),
    ("echo $(rm -rf X)", D),
    ("echo `rm -rf X`", D),
    ("bash -c 'rm -rf X'", D),
    ('sh -c "rm -rf X"', D),
    ("sudo rm -rf X", D),
    ("sudo /bin/rm -rf X", D),
    ("sudo -u root -- rm -rf X", D),
    ("env rm -rf X", D),
    ("env A=1 rm -rf X", D),
    ("nice -n 5 rm -rf X", D),
    ("timeout 5 rm -rf X", D),
    ("ls | xargs rm -rf", D),
    ("nohup rm -rf X", D),
    ("command rm -rf X", D),
    ("exec rm -rf X", D),
    ("time rm -rf X", D),
    ("\\rm -rf X", D),
    ("r''m -rf X", D),
    ("./rm -rf X", D),
    ("C=rm; $C -rf X", D),  # unanalysable: a deny rule applies here, so fail closed
    ("eval rm -rf X", D),
    ("echo rm -rf X", A),
    ("rm X", A),  # the args regex does not match
    ("ls -la", A),
]


@pytest.mark.parametrize(("line", "action"), BYPASS, ids=[c[0] for c in BYPASS])
def test_bypass_suite(line: str, action: Verdict) -> None:
    d = cmd(NO_RM, line)
    assert d.action is action, d
    if action is D and d.unanalysable is None:
        assert d.rule == "no-rm"


def test_the_variable_case_is_flagged_as_unanalysable() -> None:
    d = cmd(NO_RM, "C=rm; $C -rf X")
    assert d.unanalysable is not None and "$C" in d.unanalysable
    assert d.rule is None and d.flagged
    assert "cannot be analysed" in d.reason


def test_unanalysable_without_any_restrictive_rule_runs_but_is_flagged() -> None:
    policy = Policy((cmd_rule("ok-ls", "ls", action=A),))
    d = cmd(policy, "$C -rf X")
    assert d.action is A
    assert d.flagged and d.unanalysable


def test_unanalysable_takes_the_strictest_rule_capped_at_deny() -> None:
    assert cmd(Policy((cmd_rule("w", "rm", action=W),)), "$C x").action is W
    assert cmd(Policy((cmd_rule("h", "rm", action=H),)), "$C x").action is H
    assert cmd(Policy((cmd_rule("l", "rm", action=L),)), "$C x").action is D
    assert cmd(Policy((), default=D), "$C x").action is D


def test_unanalysable_ignores_rules_for_other_users_and_shadow_rules() -> None:
    policy = Policy(
        (
            cmd_rule("bob-only", "rm", users=("bob",)),
            cmd_rule("trial", "rm", shadow=True),
        )
    )
    assert cmd(policy, "$C x", user="alice").action is A
    assert cmd(policy, "$C x", user="bob").action is D


def test_typed_lines_follow_the_same_rule_and_say_they_are_best_effort() -> None:
    d = cmd(NO_RM, "C=rm; $C -rf X", exact=False)
    assert d.action is D and d.exact is False


def test_first_match_wins() -> None:
    policy = Policy(
        (
            cmd_rule("allow-rm-tmp", "rm", action=A, args_regex=r"/tmp/"),
            cmd_rule("no-rm", "rm"),
        )
    )
    assert cmd(policy, "rm -rf /tmp/x").rule == "allow-rm-tmp"
    assert cmd(policy, "rm -rf /tmp/x").action is A
    assert cmd(policy, "rm -rf /srv/x").rule == "no-rm"


def test_strictest_command_of_a_line_decides() -> None:
    policy = Policy((cmd_rule("warn-ls", "ls", action=W), cmd_rule("hold-rm", "rm", action=H)))
    d = cmd(policy, "ls; rm x; ls")
    assert d.action is H and d.rule == "hold-rm" and d.part == "rm x"


def test_default_deny_needs_every_command_allowed() -> None:
    policy = Policy((cmd_rule("ok", "ls", "grep", action=A),), default=D)
    assert cmd(policy, "ls | grep x").action is A
    d = cmd(policy, "ls | wc -l")
    assert d.action is D and d.rule is None and d.part == "wc -l"
    assert cmd(policy, "sudo ls").action is D  # sudo itself is a command
    assert cmd(policy, "").action is A  # nothing runs


def test_program_globs() -> None:
    policy = Policy((cmd_rule("no-mkfs", "mkfs*"),))
    assert cmd(policy, "mkfs.ext4 /dev/sdb").action is D
    assert cmd(policy, "sudo /sbin/mkfs -t xfs /dev/sdb").action is D


def test_target_globs_and_labels() -> None:
    policy = Policy(
        (
            cmd_rule("prod-name", "reboot", targets=("prod-*",)),
            cmd_rule("prod-label", "shutdown", targets=("env=prod*",)),
        )
    )
    assert cmd(policy, "reboot", target="prod-db1").action is D
    assert cmd(policy, "reboot", target="staging-db1").action is A
    assert cmd(policy, "shutdown", labels={"env": "production"}).action is D
    assert cmd(policy, "shutdown", labels={"env": "dev"}).action is A
    assert cmd(policy, "shutdown").action is A


def test_users_and_groups() -> None:
    policy = Policy((cmd_rule("contractors", "rm", users=("@contractors", "mallory")),))
    assert cmd(policy, "rm x", user="bob", groups=("contractors",)).action is D
    assert cmd(policy, "rm x", user="mallory").action is D
    assert cmd(policy, "rm x", user="alice", groups=("admins",)).action is A


def test_shadow_rules_are_reported_not_enforced() -> None:
    policy = Policy(
        (
            cmd_rule("try-no-rm", "rm", shadow=True),
            cmd_rule("warn-rm", "rm", action=W),
            cmd_rule("try-late", "rm", shadow=True),
        )
    )
    d = cmd(policy, "rm x")
    assert d.action is W and d.rule == "warn-rm"
    assert d.shadow == ("try-no-rm",)  # a shadow rule after the deciding one never decides
    only_shadow = cmd(Policy((cmd_rule("try", "rm", shadow=True),)), "rm x")
    assert only_shadow.action is A and only_shadow.shadow == ("try",) and only_shadow.flagged


def test_hook_decision() -> None:
    d = cmd(NO_RM, "rm -rf X").hook_decision()
    assert d.verdict is D and d.rule == "no-rm" and "no-rm" in d.reason and d.hook == "policy"


# SQL ---------------------------------------------------------------------

SQL_POLICY = Policy(
    (
        sql_rule("no-drop", "drop", "truncate"),
        sql_rule("no-bulk-delete", "delete-without-where", "update-without-where"),
        sql_rule("no-program", "copy-program", "alter-system", "do-block", action=T),
        sql_rule("hold-grants", "grant", "set-role", action=H),
    )
)

SQL_BYPASS = [
    ("DROP TABLE t", D),
    ("delete from t", D),
    ("delete from t where id = 1", A),
    ("delete from t where id = $1", A),
    ("select 1; drop table t", D),
    ("with d as (delete from t returning *) select * from d", D),
    ("copy t to program 'sh -c id'", T),
    ("alter system set work_mem = '1GB'", T),
    ("do $$ begin drop table t; end $$", T),
    ("DrOp TaBlE t", D),
    ("/* x */ drop /* y */ table -- z\n t", D),
    ("select $q$ drop table t $q$", A),
    ("explain analyze delete from t", D),
    ("explain delete from t", A),
    ("prepare p as delete from t", D),
    ("set role postgres", H),
    ("select set_config('role', 'postgres', false)", H),
    ("select * from t where id = $1", A),
]


@pytest.mark.parametrize(("text", "action"), SQL_BYPASS, ids=[c[0] for c in SQL_BYPASS])
def test_sql_bypass_suite(text: str, action: Verdict) -> None:
    d = decide_sql(SQL_POLICY, "alice", (), "db1", {}, text)
    assert d.action is action, d


def test_sql_allowed_part_cannot_carry_a_denied_part() -> None:
    policy = Policy((sql_rule("reads-ok", "select", action=A), sql_rule("no-delete", "delete")))
    d = decide_sql(
        policy, "u", (), "db", {}, "with d as (delete from t returning *) select * from d"
    )
    assert d.action is D and d.rule == "no-delete"


def test_sql_tables_match_qualified_and_bare_names() -> None:
    policy = Policy(
        (
            sql_rule("no-secret", "select", tables=("secret*",)),
            sql_rule("no-audit-writes", "insert", "update", "delete", tables=("audit.*",)),
        )
    )

    def sql(text: str) -> Verdict:
        return decide_sql(policy, "u", (), "db", {}, text).action

    assert sql("select * from public.secrets") is D
    assert sql("select * from SECRETS") is D
    assert sql("insert into mine select * from secret") is D
    assert sql("select * from other") is A
    assert sql("delete from audit.log where id = 1") is D
    assert sql("delete from log where id = 1") is A  # unqualified: the rule said audit.*
    assert sql("select 1") is A  # a rule with tables never matches a statement without


def test_sql_table_rule_does_not_let_another_table_through() -> None:
    policy = Policy((sql_rule("ok-a", "select", action=A, tables=("a",)),), default=D)
    assert decide_sql(policy, "u", (), "db", {}, "select * from a").action is A
    assert decide_sql(policy, "u", (), "db", {}, "select * from a join b on true").action is D


def test_unparsable_sql_is_judged_like_an_unanalysable_command() -> None:
    d = decide_sql(SQL_POLICY, "u", (), "db", {}, "selec 1")
    assert d.action is D and d.unanalysable and "syntax error" in d.unanalysable
    relaxed = Policy((sql_rule("ok", "unparsable", action=A), *SQL_POLICY.rules))
    assert decide_sql(relaxed, "u", (), "db", {}, "selec 1").action is A
    assert decide_sql(Policy(), "u", (), "db", {}, "selec 1").action is A


def test_empty_sql_runs_nothing() -> None:
    d = decide_sql(Policy(default=D), "u", (), "db", {}, "-- nothing")
    assert d.action is A


# files -------------------------------------------------------------------


def test_file_globs_on_normalised_paths() -> None:
    policy = Policy(
        (
            Rule("no-keys", RuleKind.FILE, D, file_glob="*.pem"),
            Rule("no-shadow", RuleKind.FILE, L, file_glob="/etc/shadow"),
        )
    )

    def f(path: str) -> Verdict:
        return decide_file(policy, "u", (), "web1", {}, path).action

    assert f("/etc/ssl/private/site.pem") is D
    assert f("keys/site.pem") is D
    assert f("//etc/./ssl/../shadow") is L
    assert f("/etc/shadowy") is A


# rule validation ---------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda: Rule("", RuleKind.COMMAND, D, programs=("rm",)),
        lambda: Rule("x", RuleKind.COMMAND, D),
        lambda: Rule("x", RuleKind.COMMAND, D, programs=("rm",), args_regex="("),
        lambda: Rule("x", RuleKind.COMMAND, D, programs=("rm",), file_glob="*"),
        lambda: Rule("x", RuleKind.SQL, D, sql_classes=frozenset({"drop"}), programs=("rm",)),
        lambda: Rule("x", RuleKind.SQL, D, sql_classes=frozenset({"nuke"})),
        lambda: Rule("x", RuleKind.SQL, D),
        lambda: Rule("x", RuleKind.FILE, D),
        lambda: Rule("x", "shell", D, programs=("rm",)),  # type: ignore[arg-type]
        lambda: Rule("x", RuleKind.COMMAND, "nuke", programs=("rm",)),  # type: ignore[arg-type]
        lambda: Rule("x", RuleKind.COMMAND, D, programs=("rm",), users=("@",)),
        lambda: Policy((cmd_rule("a", "rm"), cmd_rule("a", "ls"))),
        lambda: Policy(default=W),
    ],
)
def test_invalid_rules_are_refused(build: object) -> None:
    assert callable(build)
    with pytest.raises(RuleError):
        build()


def test_rules_accept_plain_strings() -> None:
    r = Rule("x", "sql", "deny", sql_classes=frozenset({"drop"}))  # type: ignore[arg-type]
    assert r.kind is RuleKind.SQL and r.action is D
