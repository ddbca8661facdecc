"""TOTP second factor: enrolment, verification with a replay guard, lockout policy.

Pure functions over explicit times so the policy is tested without a clock or a
network; the SSH front end calls them and persists the outcome.
"""

from __future__ import annotations

import hmac
import io
from dataclasses import dataclass

import pyotp

from bastion.errors import AccessDenied

TOTP_PERIOD = 30
TOTP_DIGITS = 6


class MfaError(AccessDenied):
    """The TOTP code was refused; ``reason`` is a short audit-friendly code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def new_totp_secret() -> str:
    """A fresh base32 TOTP seed (160 bits, as RFC 4226 recommends)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, user: str, issuer: str) -> str:
    """The otpauth:// URI authenticator apps import."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD).provisioning_uri(
        name=user, issuer_name=issuer
    )


def qr_text(data: str) -> str:
    """A QR code drawn with text blocks, scannable from a terminal."""
    import qrcode  # with Pillow, a tenth of a second: only enrolments draw one

    qr = qrcode.QRCode(border=2)
    qr.add_data(data)
    qr.make(fit=True)
    out = io.StringIO()
    qr.print_ascii(out=out, invert=True)
    return out.getvalue()


def time_step(now: float) -> int:
    """The TOTP time step that contains ``now``."""
    return int(now // TOTP_PERIOD)


def code_for_step(secret: str, step: int) -> str:
    """The code an authenticator shows during ``step`` (tests and the demo use it)."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD).at(step * TOTP_PERIOD)


def match_totp(
    secret: str, code: str, now: float, last_step: int | None, valid_window: int = 1
) -> int:
    """Return the time step ``code`` belongs to, refusing wrong and replayed codes.

    A code is accepted for the current step or up to ``valid_window`` steps either
    side (clock drift). A step at or before ``last_step`` was already used (or is
    older than one that was) and is refused: one code, one login.

    Raises MfaError("bad-format" | "wrong-code" | "reused-code").
    """
    code = code.strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit():
        raise MfaError("bad-format", f"a TOTP code is {TOTP_DIGITS} digits")
    current = time_step(now)
    matched: int | None = None
    for step in range(current - valid_window, current + valid_window + 1):
        if hmac.compare_digest(code_for_step(secret, step), code):
            matched = step
            # keep looking: a later step with the same code (vanishingly rare) wins
    if matched is None:
        raise MfaError("wrong-code", "wrong TOTP code")
    if last_step is not None and matched <= last_step:
        raise MfaError(
            "reused-code",
            "this TOTP code was already used; wait for the next code (each code logs in once)",
        )
    return matched


@dataclass(frozen=True)
class LockoutPolicy:
    """After ``max_failures`` failures within ``window`` seconds, lock for ``duration``."""

    max_failures: int = 5
    window: float = 600.0
    duration: float = 900.0

    def lock_until(self, failures_in_window: int, now: float) -> float | None:
        """When to lock the user until, or None if the count is still below the limit."""
        if self.max_failures > 0 and failures_in_window >= self.max_failures:
            return now + self.duration
        return None


def locked_message(user: str, until: float, now: float) -> str:
    """What a locked user is told: why, for how long, and who can help."""
    minutes = max(1, int((until - now + 59) // 60))
    return (
        f"user {user} is locked for {minutes} more minute(s) after repeated failed logins; "
        "ask an admin ('bastion user unlock') if this was not you"
    )
