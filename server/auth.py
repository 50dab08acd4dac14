"""Who is asking and what they may do: scoped tokens, as a sans-I/O core.

Two kinds of credential:

- **JWT** (PyJWT): HS256 with ``CUECARD_JWT_SECRET`` (unset: a secret kept in
  ``data_dir/jwt_secret``, 0600), or RS256 verified with the PEM public key at
  ``CUECARD_JWT_PUBLIC_KEY`` (minted elsewhere with the private key: ``cuecard token create
  --private-key``). Claims: ``sub`` (a rep or an integration), ``scope`` (space- or
  comma-separated ``SCOPES``), ``call`` (one call id or ``*``), ``exp``, ``iat``, ``nbf``;
  ``exp``/``sub``/``scope``/``call`` are required, ``exp`` and ``nbf`` are checked with
  ``CUECARD_JWT_LEEWAY_S`` of clock skew (at most ``MAX_LEEWAY_S``). Only the configured
  algorithm is accepted (never ``none``, never HS256 when RS256 is configured).
- **the static token** (``CUECARD_TOKEN`` or ``data_dir/token``): ``admin``, for local use.

``Grant.allows(scope, call_id)``: ``admin`` holds every scope on every call; otherwise the
token needs ``scope`` and its ``call`` must be the call or ``*`` (an endpoint over all calls
asks for ``ANY_CALL``, which only a ``*`` token holds).

``TokenVerifier.verify(token, now)`` is the core (the caller passes the time; it raises
``Unauthenticated`` with a reason that never repeats the token). ``server.access`` reads the
token off a request, checks it for the endpoint and logs refusals (``FailureLog``). ``mint`` signs one (``cuecard token create``, the
start-up banner's page links). ``twilio_signature`` and ``TwilioUpgrade`` bind a Twilio
stream's signature to its URL's one-use nonce and timestamp.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlencode

import jwt

from server.limits import valid_call_id
from server.nonces import NonceReplayed, ReplayCache, ReplayCacheFull

Scope = Literal["audio:write", "events:read", "cards:act", "admin"]
SCOPES: Final[tuple[Scope, ...]] = ("audio:write", "events:read", "cards:act", "admin")
ANY_CALL: Final = "*"
MAX_TTL_S: Final = 30 * 86_400.0  # `token create --ttl` at most
QUERY_MAX_TTL_S: Final = 86_400.0  # a token sent as ?token= lives at most this long
MAX_LEEWAY_S: Final = 300.0
# Sec-WebSocket-Protocol transport: the client offers ["cuecard.bearer", "<token>"] and the
# server selects "cuecard.bearer" (never the token) so that the browser's handshake succeeds.
SUBPROTOCOL: Final = "cuecard.bearer"
Algorithm = Literal["HS256", "RS256"]


class Unauthenticated(Exception):
    """No token, or one that is not valid now (HTTP 401, close 1008). The message says why
    and never repeats the token."""


class Forbidden(Exception):
    """A valid token without the scope or the call asked for (HTTP 403, close 1008)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one presented token allows. ``lifetime_s`` is None for the static token."""

    subject: str
    scopes: frozenset[Scope]
    call: str
    lifetime_s: float | None = None

    def allows(self, scope: Scope, call_id: str | None) -> bool:
        return self.refusal(scope, call_id) is None

    def refusal(self, scope: Scope, call_id: str | None) -> str | None:
        """Why this token may not ``scope`` on ``call_id`` (``ANY_CALL``: on every call;
        None: on some call, before the call id is known)."""
        if "admin" in self.scopes:
            return None
        if scope not in self.scopes:
            return f"token lacks the {scope} scope"
        if call_id is not None and self.call not in (ANY_CALL, call_id):
            wanted = "every call (*)" if call_id == ANY_CALL else f"call {call_id[:64]!r}"
            return f"token is for call {self.call!r}, not {wanted} ({scope})"
        return None

    @property
    def viewer_only(self) -> bool:
        """A short-lived JWT that can neither send audio nor administer: the only kind
        accepted as ``?token=`` (URLs end up in histories and proxies' logs)."""
        return (
            self.lifetime_s is not None
            and self.lifetime_s <= QUERY_MAX_TTL_S
            and not {"audio:write", "admin"} & self.scopes
        )


ADMIN = Grant("static token", frozenset({"admin"}), ANY_CALL)


def parse_scopes(text: str) -> frozenset[Scope]:
    """``"events:read cards:act"`` or ``"events:read,cards:act"``; ValueError on an unknown
    or missing scope."""
    names = [s for s in re.split(r"[\s,]+", text) if s]
    unknown = [s for s in names if s not in SCOPES]
    if unknown:
        raise ValueError(f"unknown scope {unknown[0][:40]!r} (scopes: {', '.join(SCOPES)})")
    if not names:
        raise ValueError("no scope")
    return frozenset(s for s in SCOPES if s in names)


_TTL = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}


def parse_ttl(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``7d`` -> seconds, within (0, ``MAX_TTL_S``]."""
    m = _TTL.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"ttl {text!r} must be a number with s, m, h or d (e.g. 12h)")
    seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    if not 0 < seconds <= MAX_TTL_S:
        raise ValueError(f"ttl {text!r} must be more than 0 and at most 30d")
    return seconds


@dataclass(frozen=True, slots=True)
class JwtKey:
    """The key JWTs are verified with: an HS256 secret, or an RS256 public key (PEM)."""

    algorithm: Algorithm
    key: str

    def __post_init__(self) -> None:
        if not self.key:
            raise ValueError("an empty JWT key would let anyone in")


def mint(
    key: str,
    algorithm: Algorithm,
    subject: str,
    scopes: Iterable[Scope],
    call: str,
    ttl_s: float,
    now: float,
) -> str:
    """A signed JWT (``key``: the HS256 secret or the RS256 private key, PEM)."""
    scopes = frozenset(scopes)
    if not subject or not scopes:
        raise ValueError("a token needs a subject and at least one scope")
    if call != ANY_CALL and not valid_call_id(call):
        raise ValueError("call must be a call id (1-128 of [A-Za-z0-9._-]) or *")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError("ttl must be more than 0 s and at most 30 days")
    issued = math.floor(now)
    claims = {
        "sub": subject,
        "scope": " ".join(s for s in SCOPES if s in scopes),
        "call": call,
        "iat": issued,
        "nbf": issued,
        "exp": issued + math.ceil(ttl_s),
    }
    return jwt.encode(claims, key, algorithm=algorithm)


class TokenVerifier:
    """The static token (admin) or a JWT signed with ``key``; ``verify`` -> ``Grant``."""

    def __init__(self, static_token: str, key: JwtKey, leeway_s: float = 30.0) -> None:
        if not static_token:
            raise ValueError("an empty token would let anyone in")
        if not 0 <= leeway_s <= MAX_LEEWAY_S:
            raise ValueError(f"leeway must be within [0, {MAX_LEEWAY_S:g}] s")
        self._static = static_token.encode()
        self._key = key
        self.leeway_s = leeway_s

    def verify(self, token: str, now: float) -> Grant:
        if hmac.compare_digest(token.encode("utf-8", "replace"), self._static):
            return ADMIN
        if token.count(".") != 2:
            raise Unauthenticated("wrong token")
        try:
            claims = jwt.decode(
                token,
                self._key.key,
                algorithms=[self._key.algorithm],
                options={
                    "require": ["exp", "sub", "scope", "call"],
                    # checked below against the caller's clock, with the bounded leeway
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.InvalidTokenError as err:
            raise Unauthenticated(f"invalid token: {err}") from None
        return self._grant(claims, now)

    def _grant(self, claims: dict[str, Any], now: float) -> Grant:
        exp, nbf, iat = (claims.get(k) for k in ("exp", "nbf", "iat"))
        for name, value in (("exp", exp), ("nbf", nbf), ("iat", iat)):
            if value is not None and (type(value) not in (int, float) or not math.isfinite(value)):
                raise Unauthenticated(f"invalid token: {name} must be a number")
        assert isinstance(exp, int | float)
        if exp <= now - self.leeway_s:
            raise Unauthenticated("token expired")
        if nbf is not None and nbf > now + self.leeway_s:
            raise Unauthenticated("token not valid yet (nbf)")
        if iat is not None and iat > now + self.leeway_s:
            raise Unauthenticated("token issued in the future (iat)")
        subject, scope, call = claims["sub"], claims["scope"], claims["call"]
        if not isinstance(subject, str) or not 0 < len(subject) <= 200:
            raise Unauthenticated("invalid token: sub must be a name")
        if not isinstance(call, str) or not (call == ANY_CALL or valid_call_id(call)):
            raise Unauthenticated("invalid token: call must be a call id or *")
        try:
            scopes = parse_scopes(scope if isinstance(scope, str) else "")
        except ValueError as err:
            raise Unauthenticated(f"invalid token: {err}") from None
        lifetime_s = float(exp - (iat if iat is not None else now))
        return Grant(subject, scopes, call, lifetime_s)


def safe_host(host: str, secret_configured: bool) -> tuple[str, str | None]:
    """Where to bind, and a warning: without any configured secret (the tokens' keys were
    generated into the data directory, so nobody set them up for a network) only loopback."""
    if secret_configured or _is_loopback(host):
        return host, None
    return "127.0.0.1", (
        f"CUECARD_HOST={host} ignored: binding 127.0.0.1 only, because no secret is configured "
        "(set CUECARD_TOKEN or CUECARD_JWT_SECRET / CUECARD_JWT_PUBLIC_KEY to serve on a network)"
    )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# -- refusals in the log ------------------------------------------------------------------
@dataclass(slots=True)
class FailureLog:
    """At most one log line per peer per ``interval_s``. ``note(peer, now)`` says whether to
    write one now and how many refusals of that peer were not written since the last; memory
    is bounded by ``max_peers`` (beyond that, peers share one ``*`` entry)."""

    interval_s: float = 10.0
    max_peers: int = 4096
    _peers: dict[str, tuple[float, int]] = field(default_factory=dict)  # last line, suppressed

    def note(self, peer: str, now: float) -> int | None:
        """None: stay quiet; else the count of this peer's refusals suppressed before."""
        if peer not in self._peers and len(self._peers) >= self.max_peers:
            self._peers = {p: v for p, v in self._peers.items() if now - v[0] < self.interval_s}
            if len(self._peers) >= self.max_peers:
                peer = "*"
        last = self._peers.get(peer)
        if last is not None and now - last[0] < self.interval_s:
            self._peers[peer] = (last[0], last[1] + 1)
            return None
        self._peers[peer] = (now, 0)
        return 0 if last is None else last[1]


# -- Twilio ---------------------------------------------------------------------------------
def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by the sorted
    POST parameters (none for a WebSocket upgrade), keyed with the account auth token."""
    data = url + "".join(k + v for k, v in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_stream_url(public_url: str, now: float, nonce: str | None = None) -> str:
    """The ``<Stream url>`` for one call: ``/v1/twilio?nonce=…&ts=…``, fresh each call."""
    query = urlencode({"nonce": nonce or secrets.token_urlsafe(18), "ts": str(math.floor(now))})
    return f"{public_url.rstrip('/')}/v1/twilio?{query}"


@dataclass(slots=True)
class TwilioUpgrade:
    """Checks a Twilio stream's upgrade: the signature is over the full URL, query included,
    whose ``ts`` is within ``window_s`` (plus the leeway) and whose ``nonce`` is used once."""

    auth_token: str
    public_url: str
    window_s: float = 300.0
    leeway_s: float = 30.0
    nonces: ReplayCache = field(default_factory=ReplayCache)

    def refusal(self, query: str, signature: str | None, now: float) -> str | None:
        url = f"{self.public_url.rstrip('/')}/v1/twilio" + (f"?{query}" if query else "")
        expected = twilio_signature(self.auth_token, url)
        if not signature or not hmac.compare_digest(expected.encode(), signature.encode()):
            return "bad X-Twilio-Signature"
        params = parse_qs(query)
        nonce, ts = params.get("nonce", [""])[0], params.get("ts", [""])[0]
        if not 16 <= len(nonce) <= 256 or not (ts.isascii() and ts.isdigit() and len(ts) < 12):
            return "stream URL needs ?nonce= (16-256 characters) and ?ts= (epoch seconds)"
        if not now - self.window_s - self.leeway_s <= int(ts) <= now + self.leeway_s:
            return "stream URL timestamp outside the window (a stale or replayed upgrade)"
        try:
            self.nonces.use(nonce, int(ts) + self.window_s + 2 * self.leeway_s, now)
        except NonceReplayed:
            return "stream URL nonce already used (a replayed upgrade)"
        except ReplayCacheFull as err:
            return str(err)
        return None
