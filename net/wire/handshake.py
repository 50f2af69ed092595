"""The shared-key handshake as a sans-IO state machine: messages in, messages out.

When both sides set ``NET_SECRET``, every connection proves, in both
directions, that the other end knows the key, before any call is read::

    server -> client   AUTH {"nonce": Ns}
    client -> server   AUTH {"nonce": Nc, "proof": HMAC(key, "net-auth-v1|client|" Ns Nc)}
    server -> client   AUTH {"ok": True, "proof": HMAC(key, "net-auth-v1|server|" Ns Nc)}
                    or AUTH {"ok": False, "error": "..."} and the server closes

Both nonces are 32 fresh random bytes, so a recorded handshake is worthless
on a new connection (the other side's nonce differs). The role label keeps
one side's proof from being reflected back as the other's. The server checks
the client *before* it computes anything with the key, so a stranger learns
nothing but a random nonce. Proofs are compared with
:func:`hmac.compare_digest`.

A TLS-only connection (no key) uses the same exchange reduced to the
server's final ``{"ok": True}``: with TLS 1.3 a client learns that the
server rejected its certificate only when it next reads, so the server
always has the last word before calls start.

Nothing here touches a socket; :mod:`net.transport` moves the messages, and
tests and fuzzers drive these classes directly.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Callable

from ..errors import AuthError

NONCE_SIZE = 32
PROOF_SIZE = hashlib.sha256().digest_size
MAX_MESSAGE = 1024          # handshake frames are tiny: an unauthenticated peer gets no bigger buffer
MIN_SECRET = 16             # characters of NET_SECRET; shorter keys fall to offline guessing
LABEL = b"net-auth-v1|"

Message = dict[str, Any]
NonceSource = Callable[[int], bytes]


def proof(secret: bytes, role: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    """HMAC-SHA256 binding the key to both nonces and to the prover's role."""
    return hmac.new(secret, LABEL + role + b"|" + server_nonce + client_nonce, hashlib.sha256).digest()


def _field(message: Any, name: str, size: int, who: str) -> bytes:
    value = message.get(name) if isinstance(message, dict) else None
    if not isinstance(value, bytes) or len(value) != size:
        raise AuthError(f"{who} sent a malformed handshake message (field {name!r})")
    return value


class ServerHandshake:
    """The accepting side: challenges, verifies the client, then proves itself."""

    def __init__(self, secret: bytes | None, peer: str = "the client",
                 nonce: NonceSource = secrets.token_bytes):
        self.secret = secret
        self.peer = peer
        self._nonce_source = nonce
        self.nonce = b""
        self.done = False
        self.farewell: Message | None = None     # what to tell the client before closing on failure
        self._started = False

    def start(self) -> list[Message]:
        """Messages the server sends first."""
        if self._started:
            raise AuthError("handshake already started")
        self._started = True
        if self.secret is None:
            self.done = True
            return [{"ok": True}]
        self.nonce = self._nonce_source(NONCE_SIZE)
        return [{"nonce": self.nonce}]

    def receive(self, message: Any) -> list[Message]:
        """Handle the client's message; returns what to send, raises AuthError on failure."""
        if not self._started or self.done:
            self.farewell = {"ok": False, "error": "unexpected handshake message"}
            raise AuthError(f"{self.peer} sent a handshake message out of turn")
        assert self.secret is not None
        try:
            client_nonce = _field(message, "nonce", NONCE_SIZE, self.peer)
            claimed = _field(message, "proof", PROOF_SIZE, self.peer)
        except AuthError:
            self.farewell = {"ok": False, "error": "malformed handshake message"}
            raise
        expected = proof(self.secret, b"client", self.nonce, client_nonce)
        if not hmac.compare_digest(claimed, expected) or hmac.compare_digest(client_nonce, self.nonce):
            self.farewell = {"ok": False, "error": "wrong shared key (NET_SECRET differs)"}
            raise AuthError(f"{self.peer} failed the shared-key check: its NET_SECRET differs "
                            f"(or it replayed an old handshake)")
        self.done = True
        return [{"ok": True, "proof": proof(self.secret, b"server", self.nonce, client_nonce)}]


class ClientHandshake:
    """The connecting side: answers the challenge, then checks the server's proof."""

    def __init__(self, secret: bytes | None, peer: str = "the peer",
                 nonce: NonceSource = secrets.token_bytes):
        self.secret = secret
        self.peer = peer
        self._nonce_source = nonce
        self.server_nonce = b""
        self.nonce = b""
        self.done = False
        self.farewell: Message | None = None     # the client never explains itself to a failed server

    def start(self) -> list[Message]:
        """The client speaks second: nothing to send yet."""
        return []

    def receive(self, message: Any) -> list[Message]:
        if self.done:
            raise AuthError(f"{self.peer} sent a handshake message after the handshake finished")
        if isinstance(message, dict) and message.get("ok") is False:
            reason = message.get("error")
            reason = reason if isinstance(reason, str) else "no reason given"
            raise AuthError(f"{self.peer} refused this process: {reason[:200]}")
        if self.secret is None:
            if message != {"ok": True}:
                raise AuthError(f"{self.peer} sent an unexpected handshake message")
            self.done = True
            return []
        if not self.server_nonce:
            if not isinstance(message, dict) or set(message) != {"nonce"}:
                raise AuthError(f"{self.peer} sent a malformed handshake challenge")
            self.server_nonce = _field(message, "nonce", NONCE_SIZE, self.peer)
            self.nonce = self._nonce_source(NONCE_SIZE)
            return [{"nonce": self.nonce, "proof": proof(self.secret, b"client", self.server_nonce, self.nonce)}]
        if not isinstance(message, dict) or message.get("ok") is not True:
            raise AuthError(f"{self.peer} sent a malformed handshake verdict")
        claimed = _field(message, "proof", PROOF_SIZE, self.peer)
        if not hmac.compare_digest(claimed, proof(self.secret, b"server", self.server_nonce, self.nonce)):
            raise AuthError(f"{self.peer} could not prove it knows the shared key (NET_SECRET): "
                            f"refusing to talk to it")
        self.done = True
        return []


def secret_bytes(secret: str | bytes | None) -> bytes | None:
    """NET_SECRET as HMAC key bytes (None: no shared key)."""
    if secret is None or secret == "":
        return None
    return secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
