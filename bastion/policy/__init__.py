"""Guardrails: what a command line, SQL text or file path would do, and the rules on it.

Pure functions, no I/O: ``commands`` (shell lines through bashlex), ``sql``
(statements through pglast, PostgreSQL's own parser) and ``rules`` (the ordered
rule list and its decisions). The session core's hooks call them.
"""
