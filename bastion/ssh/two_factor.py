"""Public key *and* keyboard-interactive, both required, on asyncssh.

OpenSSH expresses this as ``AuthenticationMethods publickey,keyboard-interactive``:
after a valid signature the server answers USERAUTH_FAILURE with
``partial_success = true`` and offers only keyboard-interactive (RFC 4252 §5.1).
asyncssh's server has no hook for partial success, so this connection subclass
adds one at the narrowest point:

* ``validate_public_key`` — when a *signed* public-key request verifies, it asks
  the server object (``first_factor_passed``) whether the user may go on, marks
  the first factor done, and reports failure so asyncssh sends USERAUTH_FAILURE;
* ``send_userauth_failure`` — sets ``partial_success`` on that one reply;
* ``public_key_auth_supported`` / ``kbdint_auth_supported`` — before the key
  only publickey is offered, after it only keyboard-interactive, so the method
  list in every failure is what OpenSSH would send.

A key query without a signature still gets PK_OK, so stock clients behave as
with OpenSSH, and a repeated ``ssh-userauth`` service request after a failure is
accepted as OpenSSH accepts it (paramiko sends one before every method).
Keyboard-interactive for a different user name than the one that proved the key
is refused.
"""

from __future__ import annotations

from typing import Protocol, cast

from asyncssh.auth import KbdIntChallenge, KbdIntResponse

from bastion.proxy_protocol import Address
from bastion.ssh.algorithms import sha1_signature
from bastion.ssh.flow import FlowControlledConnection

USERAUTH_SERVICE = b"ssh-userauth"


class FirstFactorJudge(Protocol):
    """The server-side callback that decides what happens after the key is proven."""

    async def first_factor_passed(self, username: str, key_data: bytes) -> bool:
        """Return True to go on to the TOTP step, False to refuse (after auditing)."""

    async def agent_forwarding_allowed(self) -> bool:
        """Return True if this connection's grant allows agent forwarding (audits either way)."""


class TwoFactorServerConnection(FlowControlledConnection):
    """An asyncssh server connection that requires publickey, then keyboard-interactive."""

    _first_factor_user: str | None = None
    forwarded_peer: Address | None = None
    """The client's address as a trusted PROXY-protocol balancer sent it (bastion.proxied)."""
    _partial_success_pending: bool = False

    @property
    def first_factor_user(self) -> str | None:
        """The user name whose key signature verified on this connection, if any."""
        return self._first_factor_user

    async def validate_public_key(
        self, username: str, key_data: bytes, msg: bytes, signature: bytes
    ) -> bool:
        """Verify as asyncssh does; on a verified signature, move on to the second factor.

        A SHA-1 signature (``ssh-rsa``) is refused before it is checked.
        """
        if msg and sha1_signature(signature):
            return False
        ok = await super().validate_public_key(username, key_data, msg, signature)
        if not ok or not msg:
            return ok
        judge = cast(FirstFactorJudge, self.get_owner())
        if await judge.first_factor_passed(username, key_data):
            self._first_factor_user = username
            self._partial_success_pending = True
        return False

    async def create_agent_listener(self) -> bool:
        """Accept ``ssh -A`` only when the grant allows it; otherwise no socket is created."""
        judge = cast(FirstFactorJudge, self.get_owner())
        if not await judge.agent_forwarding_allowed():
            return False
        return await super().create_agent_listener()

    def public_key_auth_supported(self) -> bool:
        """Offer publickey only until a key has been proven."""
        return self._first_factor_user is None and super().public_key_auth_supported()

    def kbdint_auth_supported(self) -> bool:
        """Offer keyboard-interactive only after a key has been proven."""
        return self._first_factor_user is not None and super().kbdint_auth_supported()

    def send_userauth_failure(self, partial_success: bool) -> None:
        """Mark the failure that follows a proven key as a partial success.

        Also accept another ``ssh-userauth`` service request after a failure, as
        OpenSSH does: paramiko (and other clients) send one before each method.
        asyncssh would otherwise disconnect them at the second factor.
        """
        partial, self._partial_success_pending = self._partial_success_pending, False
        super().send_userauth_failure(partial_success or partial)
        self._next_service = USERAUTH_SERVICE

    async def get_kbdint_challenge(
        self, username: str, lang: str, submethods: str
    ) -> KbdIntChallenge:
        """Refuse the second factor for any user other than the one who proved the key."""
        if username != self._first_factor_user:
            return False
        return await super().get_kbdint_challenge(username, lang, submethods)

    async def validate_kbdint_response(
        self, username: str, responses: KbdIntResponse
    ) -> KbdIntChallenge:
        """As ``get_kbdint_challenge``: answers only count for the proven user."""
        if username != self._first_factor_user:
            return False
        return await super().validate_kbdint_response(username, responses)
