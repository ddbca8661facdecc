"""The SSH user name a contractor types, which can also carry the target.

``alice`` logs in and chooses a target from a menu or the command line
(``ssh -t alice@bastion web1``). ``alice%web1`` and ``alice%web1%root`` name
the target (and login) inside the user name, which is the only place ``scp``,
``sftp`` and ``rsync -e ssh`` can carry it. ``%`` was chosen because OpenSSH
splits ``user@host`` at the last ``@`` and scp splits at ``:``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SEPARATOR = "%"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class LoginNameError(ValueError):
    """The user name does not follow USER[%TARGET[%LOGIN]]."""


@dataclass(frozen=True)
class LoginName:
    """A parsed SSH user name."""

    user: str
    target: str | None = None
    login: str | None = None


def valid_name(name: str) -> bool:
    """Whether ``name`` is acceptable as a user, target or login name."""
    return bool(_NAME.match(name))


def parse_login_name(text: str) -> LoginName:
    """Split ``USER[%TARGET[%LOGIN]]``; raises LoginNameError saying what is wrong."""
    parts = text.split(SEPARATOR)
    if len(parts) > 3:
        raise LoginNameError(
            f"'{text}' has too many '%': use USER, USER%TARGET or USER%TARGET%LOGIN"
        )
    for part in parts:
        if not valid_name(part):
            raise LoginNameError(
                f"'{part}' in '{text}' is not a valid name "
                "(letters, digits, '.', '_', '-'; up to 64 characters)"
            )
    user = parts[0]
    target = parts[1] if len(parts) > 1 else None
    login = parts[2] if len(parts) > 2 else None
    return LoginName(user=user, target=target, login=login)
