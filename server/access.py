"""The I/O side of ``server.auth``: the token read off a request or a WebSocket upgrade,
checked for what the endpoint needs, and every refusal logged.

Where a token is read, first found wins:

1. ``Authorization: Bearer <token>`` (any client that can set headers);
2. ``Sec-WebSocket-Protocol: cuecard.bearer, <token>`` (browsers, which cannot set headers on
   a WebSocket: ``new WebSocket(url, ["cuecard.bearer", token])``); the server's accept
   selects ``cuecard.bearer`` (``subprotocol(ws)``), never the token;
3. ``?token=<token>``, for viewer tokens only (``Grant.viewer_only``: a JWT without
   ``audio:write`` or ``admin`` that lives at most 24 h). The static token and audio tokens
   are refused there with a reason: a URL ends up in browser histories and proxies' logs.
   (``cuecard serve`` runs uvicorn at log level warning, so its access log, which would
   print the query, is off.)

A refusal is ``Unauthenticated`` (HTTP 401, no token or not a valid one) or ``Forbidden``
(HTTP 403, a valid token without the scope or the call); sockets close with 1008 and the same
reason. Each is logged as a WARNING with the peer's address and the reason, at most one line
per peer per 10 s (``FailureLog``, with the count of those not written), never the token.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import HTTPException, Request
from starlette.requests import HTTPConnection

from server.auth import (
    ANY_CALL,
    SUBPROTOCOL,
    FailureLog,
    Forbidden,
    Grant,
    JwtKey,
    Scope,
    TokenVerifier,
    TwilioUpgrade,
    Unauthenticated,
    mint,
)
from server.clock import Clock
from server.ingest import POLICY_VIOLATION, ProtocolError
from server.settings import Settings, rsa_public_key

log = logging.getLogger("cuecard.auth")

Dependency = Callable[..., Awaitable[Grant]]
VIEWER_TTL_S = 12 * 3600.0  # the banner's page links
# (fits a close frame's 123 bytes whole)
QUERY_REFUSED = (
    "?token= takes viewer tokens only (no audio:write/admin, ttl <= 24h): send it as a header"
)


def subprotocol(conn: HTTPConnection) -> str | None:
    """``cuecard.bearer`` when the client offered it (the accept must select it)."""
    offered = conn.scope.get("subprotocols") or []
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def presented(conn: HTTPConnection) -> tuple[str, str] | None:
    """The token and how it came (``header``, ``subprotocol``, ``query``), or None."""
    header = conn.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip(), "header"
    offered = list(conn.scope.get("subprotocols") or [])
    if SUBPROTOCOL in offered:
        at = offered.index(SUBPROTOCOL) + 1
        return (offered[at] if at < len(offered) else ""), "subprotocol"
    token = conn.query_params.get("token")
    return (token, "query") if token is not None else None


class AccessRefused(ProtocolError):
    """A token refused inside an audio socket's protocol (Twilio's and Vonage's start,
    AudioHook's open): the socket closes with 1008 and the reason. It was logged, rate-limited,
    where it was refused, so the socket loop does not log it again."""

    def __init__(self, reason: str) -> None:
        super().__init__(POLICY_VIOLATION, reason)


class Authenticator:
    """Checks requests against a ``TokenVerifier`` at ``clock``'s time. ``signing_key`` (the
    HS256 secret; None with RS256, whose private key the server never holds) lets the server
    mint tokens itself: the start-up banner's page links."""

    def __init__(
        self, verifier: TokenVerifier, clock: Clock, signing_key: str | None = None
    ) -> None:
        self.verifier = verifier
        self.clock = clock
        self.signing_key = signing_key
        self.failures = FailureLog()
        self.twilio: TwilioUpgrade | None = None  # CUECARD_TWILIO_AUTH_TOKEN: signed upgrades

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock) -> Authenticator:
        if settings.jwt_public_key:
            pem = rsa_public_key(Path(settings.jwt_public_key).expanduser())
            key, signing = JwtKey("RS256", pem), None
        else:
            secret = settings.resolved_jwt_secret()
            key, signing = JwtKey("HS256", secret), secret
        verifier = TokenVerifier(settings.resolved_token(), key, settings.jwt_leeway_s)
        auth = cls(verifier, clock, signing)
        if settings.twilio_auth_token:
            auth.twilio = TwilioUpgrade(
                settings.twilio_auth_token, settings.public_url, leeway_s=settings.jwt_leeway_s
            )
        return auth

    def token(self, token: str) -> Grant:
        """The grant of ``token`` now."""
        if not token:
            raise Unauthenticated("missing token")
        return self.verifier.verify(token, self.clock.now())

    def authenticate(self, conn: HTTPConnection) -> Grant:
        """The grant of the request's token (``Unauthenticated`` when there is none that is
        valid, or when it came as ``?token=`` and is no viewer token)."""
        found = presented(conn)
        if found is None:
            raise Unauthenticated("missing token")
        token, transport = found
        grant = self.token(token)
        if transport == "query" and not grant.viewer_only:
            raise Unauthenticated(QUERY_REFUSED)
        return grant

    def authorize(
        self, conn: HTTPConnection, scope: Scope, call_id: str | None, sent: str | None = None
    ) -> Grant:
        """The grant of the request's token (or of the token ``sent`` in a message, when
        given) if it allows ``scope`` on ``call_id`` (``ANY_CALL``: on every call; None: on
        some call); a refusal is logged and raised."""
        try:
            grant = self.authenticate(conn) if sent is None else self.token(sent)
            refusal = grant.refusal(scope, call_id)
            if refusal is not None:
                raise Forbidden(refusal)
        except (Unauthenticated, Forbidden) as err:
            self.refused(conn, str(err))
            raise
        return grant

    def refused(self, conn: HTTPConnection, reason: str) -> None:
        """Log a refusal: the peer and the reason, rate-limited per peer, never the token."""
        peer = conn.client.host if conn.client else "unknown"
        suppressed = self.failures.note(peer, self.clock.now())
        if suppressed is not None:
            more = f" (+{suppressed} more refused in the last 10 s)" if suppressed else ""
            log.warning("refused %s from %s: %s%s", conn.url.path[:200], peer, reason, more)

    def requirement(self, scope: Scope, per_call: bool) -> Dependency:
        """A FastAPI dependency: 401/403 unless the token allows ``scope`` on the route's
        ``{call_id}`` (``per_call``) or on every call."""
        if per_call:

            async def on_call(request: Request, call_id: str) -> Grant:
                return self._http(request, scope, call_id)

            return on_call

        async def on_all(request: Request) -> Grant:
            return self._http(request, scope, ANY_CALL)

        return on_all

    def _http(self, request: Request, scope: Scope, call_id: str) -> Grant:
        try:
            return self.authorize(request, scope, call_id)
        except Unauthenticated as err:
            raise HTTPException(401, str(err), {"WWW-Authenticate": "Bearer"}) from None
        except Forbidden as err:
            raise HTTPException(403, str(err)) from None

    def mint_viewer(self, subject: str, scopes: tuple[Scope, ...], call: str) -> str | None:
        """A viewer token for a page link (``VIEWER_TTL_S``), signed here, or None when the
        server holds no signing key (RS256: minted where the private key is)."""
        if self.signing_key is None:
            return None
        now = self.clock.now()
        return mint(self.signing_key, "HS256", subject, scopes, call, VIEWER_TTL_S, now)
