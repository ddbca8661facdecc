"""One TOML table of the provisioning file being read: typed getters, precise errors.

Every getter names the table and key it reads when the value is wrong, and
``done`` refuses keys nobody read (with a "did you mean" hint), or says where a
secret belongs when the key looks like one.
"""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Any, NoReturn

from bastion.errors import BastionError, UsageError
from bastion.timeparse import parse_time

SECRET_KEYS = frozenset(
    {"password", "secret", "totp", "totp_secret", "token", "private_key", "otpauth_uri"}
)
"""Keys refused anywhere in the file, with a message saying where the secret belongs."""


class SpecError(BastionError):
    """The provisioning file is malformed; the message names file, table and key."""


class Table:
    """One TOML table being read: typed getters, and unknown keys refused at ``done``."""

    def __init__(self, file: str, where: str, data: Any) -> None:
        self.file, self.where = file, where
        if not isinstance(data, dict):
            self.fail(None, f"must be a table, not {kind_of(data)}")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def fail(self, key: str | None, problem: str) -> NoReturn:
        at = f"{self.where}.{key}" if key and self.where else (key or self.where or "top level")
        raise SpecError(f"{self.file}: {at}: {problem}")

    def get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key)

    def text(self, key: str, *, required: bool = False) -> str | None:
        value = self.get(key)
        if value is None:
            if required:
                self.fail(key, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(key, f"must be a non-empty string, not {kind_of(value)}")
        return str(value).strip()

    def texts(self, key: str) -> tuple[str, ...]:
        value = self.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            self.fail(key, "must be a list of non-empty strings")
        return tuple(str(v).strip() for v in value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, f"must be true or false, not {kind_of(value)}")
        return bool(value)

    def sub(self, key: str) -> Table | None:
        value = self.get(key)
        if value is None:
            return None
        return Table(self.file, f"{self.where}.{key}" if self.where else key, value)

    def time(self, key: str) -> float | None:
        """An absolute time: a TOML date or date-time, or an ISO 8601 string (UTC if no zone)."""
        value = self.get(key)
        if value is None:
            return None
        if isinstance(value, dt.datetime):
            when = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            return when.timestamp()
        if isinstance(value, dt.date):
            return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC).timestamp()
        if isinstance(value, str) and value.strip() and value.strip()[0].isdigit():
            try:
                return parse_time(value, 0.0)
            except UsageError:
                pass
        self.fail(
            key,
            f"{value!r} is not a date; write 2027-01-31 or 2027-01-31T18:00:00Z "
            "(a fixed time, so applying the file twice gives the same result)",
        )

    def done(self) -> None:
        for key in self.data:
            if key in self.seen:
                continue
            if key in SECRET_KEYS:
                self.fail(key, WHERE_SECRETS_GO)
            known = sorted(self.seen)
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{near[0]}'?" if near else f"; known keys: {', '.join(known)}"
            self.fail(key, f"unknown key{hint}")


WHERE_SECRETS_GO = (
    "secrets are never written into the provisioning file: TOTP is enrolled per user "
    "(bastion user reset-mfa NAME) and a database password is referenced as "
    "password = 'file:/path' or 'env:VARIABLE'"
)


def kind_of(value: Any) -> str:
    """What a wrong value is, for messages: 'a table', 'a list', 'int 3'."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"
