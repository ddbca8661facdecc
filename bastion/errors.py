"""Error types shared across bastion.

Every refusal a person can act on is a ``BastionError`` whose message names the
cause and, where there is one, the fix.
"""


class BastionError(Exception):
    """Base class for errors bastion reports to people (CLI users, SSH clients)."""


class ConfigError(BastionError):
    """The configuration file or a key file is missing or malformed."""


class StoreError(BastionError):
    """The state store refused an operation (unknown name, duplicate, bad schema)."""


class StoreUnavailable(StoreError):
    """The state database cannot be reached (down, unreachable, or dropping connections).

    Distinct from a refused statement: the node answers it by refusing new logins
    and journaling its own writes in the outbox (``bastion.store.outbox``).
    """


class NotFound(StoreError):
    """A named user, target, grant or session does not exist."""


class AlreadyExists(StoreError):
    """An object with that name already exists."""


class AccessDenied(BastionError):
    """A policy check refused access; the message says what is missing."""


class UsageError(BastionError, ValueError):
    """A command-line value is malformed (a duration, a name, a missing option).

    A ``ValueError`` too, so parsers that raise it (``timeparse``) keep their contract;
    the CLI exits 2 for it, as argparse does for its own usage errors.
    """
