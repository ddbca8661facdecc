"""Guardrail parse and decision cost: per distinct text (a parse) and per cached hit.

No peers: the parse layer alone (``bastion/policy``), with 20 rules, so the
numbers can be read next to ``bench/pg.py``'s per-statement budget. Workloads are
generated with a fixed seed: ``--distinct`` SQL texts and shell lines, each
decided once cold (parse + match) and ``--repeat`` times warm (cache hit +
match).

Run from the repository root::

    PYTHONPATH=. python bench/policy.py [--distinct 2000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from bastion.policy.commands import command_cache, parse_command_line
from bastion.policy.rules import Policy, Rule, RuleKind, decide_command, decide_sql
from bastion.policy.sql import parse_statements, sql_cache
from bastion.session.hooks import Verdict


def twenty_rules() -> Policy:
    """10 command and 10 SQL rules of the kinds an admin writes, none matching first."""
    d, w = Verdict.DENY, Verdict.WARN
    rules = [
        Rule("no-rm-rf", RuleKind.COMMAND, d, programs=("rm",), args_regex=r"-\w*r\w*f"),
        Rule("no-mkfs", RuleKind.COMMAND, d, programs=("mkfs*",)),
        Rule("no-dd", RuleKind.COMMAND, d, programs=("dd",), args_regex=r"of=/dev/"),
        Rule("no-reboot", RuleKind.COMMAND, d, programs=("reboot", "shutdown", "halt")),
        Rule("warn-sudo", RuleKind.COMMAND, w, programs=("sudo",), targets=("env=prod",)),
        Rule("no-iptables", RuleKind.COMMAND, d, programs=("iptables", "nft")),
        Rule("no-userdel", RuleKind.COMMAND, d, programs=("userdel", "deluser")),
        Rule("no-chmod-777", RuleKind.COMMAND, d, programs=("chmod",), args_regex="777"),
        Rule("no-curl-pipe", RuleKind.COMMAND, w, programs=("curl", "wget"), users=("@ext",)),
        Rule("no-kill-1", RuleKind.COMMAND, d, programs=("kill",), args_regex=r"\b1\b"),
        Rule("no-drop", RuleKind.SQL, d, sql_classes=frozenset({"drop"})),
        Rule("no-truncate", RuleKind.SQL, d, sql_classes=frozenset({"truncate"})),
        Rule(
            "no-bulk",
            RuleKind.SQL,
            d,
            sql_classes=frozenset({"delete-without-where", "update-without-where"}),
        ),
        Rule("no-program", RuleKind.SQL, d, sql_classes=frozenset({"copy-program"})),
        Rule("no-alter-system", RuleKind.SQL, d, sql_classes=frozenset({"alter-system"})),
        Rule("no-do", RuleKind.SQL, w, sql_classes=frozenset({"do-block"})),
        Rule("no-grant", RuleKind.SQL, d, sql_classes=frozenset({"grant", "set-role"})),
        Rule("no-ddl-prod", RuleKind.SQL, d, sql_classes=frozenset({"ddl"}), targets=("prod-*",)),
        Rule(
            "no-secret",
            RuleKind.SQL,
            d,
            sql_classes=frozenset({"select"}),
            tables=("secret*", "pii.*"),
        ),
        Rule(
            "warn-audit",
            RuleKind.SQL,
            w,
            sql_classes=frozenset({"insert", "update", "delete"}),
            tables=("audit.*",),
        ),
    ]
    return Policy(tuple(rules))


def sql_texts(rng: random.Random, n: int) -> list[str]:
    shapes = [
        "select * from pgbench_accounts where aid = {i}",
        "select abalance from pgbench_accounts where aid = $1 /* {i} */",
        "update pgbench_accounts set abalance = abalance + {i} where aid = $1",
        "insert into pgbench_history (tid, bid, aid, delta, mtime) values ({i}, 1, 2, 3, now())",
        "with d as (delete from q where id = {i} returning *) select count(*) from d",
        "select o.id, c.name from orders o join customers c on c.id = o.cid where o.id > {i} "
        "order by o.id limit 50",
    ]
    return [rng.choice(shapes).format(i=i) for i in range(n)]


def shell_lines(rng: random.Random, n: int) -> list[str]:
    shapes = [
        "ls -la /var/log/app{i}",
        "tail -n 100 /var/log/syslog | grep -i error{i}",
        "sudo systemctl restart app{i}",
        "cd /srv/app && git pull && ./deploy.sh --build {i}",
        "find /tmp -name 'x{i}*' -mtime +7 -exec rm {{}} \\;",
        "bash -c 'for f in *.log; do gzip \"$f\"; done' # {i}",
    ]
    return [rng.choice(shapes).format(i=i) for i in range(n)]


def per_call(fn: Callable[[str], object], texts: list[str], rounds: int = 1) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for t in texts:
            fn(t)
    return (time.perf_counter() - start) / (len(texts) * rounds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--distinct", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    rng = random.Random(15)
    policy = twenty_rules()
    sqls, lines = sql_texts(rng, args.distinct), shell_lines(rng, args.distinct)
    sql_cache().clear()
    command_cache().clear()
    labels = {"env": "prod"}

    def sql(t: str) -> object:
        return decide_sql(policy, "alice", ("ext",), "prod-db1", labels, t)

    def sh(t: str) -> object:
        return decide_command(policy, "alice", ("ext",), "web1", labels, t, True)

    rows = [
        ("SQL parse only (pglast), distinct", per_call(parse_statements, sqls)),
        ("shell parse only (bashlex), distinct", per_call(parse_command_line, lines)),
    ]
    sql_cache().clear()
    command_cache().clear()
    rows += [
        ("SQL decide, 20 rules, distinct (parse + match)", per_call(sql, sqls)),
        ("SQL decide, 20 rules, cached hit", per_call(sql, sqls, args.repeat)),
        ("shell decide, 20 rules, distinct (parse + match)", per_call(sh, lines)),
        ("shell decide, 20 rules, cached hit", per_call(sh, lines, args.repeat)),
    ]
    print(f"{args.distinct} distinct texts each, {args.repeat} cached rounds, 20 rules\n")
    print("| what | µs per text |")
    print("|---|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e6:.1f} |")


if __name__ == "__main__":
    main()
