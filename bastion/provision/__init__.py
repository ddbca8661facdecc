"""Declarative provisioning: ``bastion apply FILE.toml`` makes the store match a file.

Three steps, one module each: ``spec`` reads and checks the file into plain
records (every error names the file, the table and the key); ``plan`` compares
those records with a snapshot of the store and returns the changes, a pure
function; ``execute`` applies a plan through audited changes, all in one store
transaction. ``bastion.cli_apply`` is the command around them.
"""
