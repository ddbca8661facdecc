"""Declarative provisioning: ``bastion apply FILE.toml`` makes the store match a file.

``spec`` (with ``table``, one TOML table's typed getters) reads and checks the file
into plain records, every error naming the file, the table and the key; ``plan``
(with ``grant_plan``) compares those records with a snapshot of the store and
returns the changes (``changes``), a pure function; ``execute`` applies a plan
through audited changes, all in one store transaction. ``bastion.cli_apply`` is
the command around them.
"""
