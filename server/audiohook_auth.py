"""AudioHook's HTTP Message Signatures (RFC 9421, HMAC-SHA256) on the WebSocket upgrade.

Genesys signs its upgrade request with the integration's client secret: ``Signature-Input``
names the covered components and the parameters (``keyid`` = the ``X-API-KEY``, ``nonce``,
``alg="hmac-sha256"``, ``created``, ``expires``), ``Signature`` carries the HMAC. The verifier
here requires every component Genesys signs (``@request-target``, ``@authority``,
``audiohook-organization-id``, ``audiohook-session-id``, ``audiohook-correlation-id``,
``x-api-key``), a ``created`` within ``max_age_s`` (plus ``skew_s`` of clock difference either
way), an ``expires`` not passed, and a nonce it has not seen before: each verified nonce is
remembered until its signature could no longer pass the age check, in a bounded cache
(``server.nonces.ReplayCache``: when full of live nonces, new connections are refused rather
than a replay let through).

``CUECARD_AUDIOHOOK_KEYS`` is a JSON object mapping each API key to its base64 client secret.
The signature base is rebuilt from the parsed ``Signature-Input`` in the canonical RFC 8941
form, so a sender must serialize it canonically, as Genesys's does. ``@authority`` is the
``Host`` header: a proxy in front must pass the host and the path through unchanged.

Only the small part of RFC 8941 (structured fields) that these two headers use is parsed:
dictionaries of inner lists of strings with parameters, and byte sequences.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from server.nonces import NonceReplayed, ReplayCache, ReplayCacheFull

REQUIRED_COMPONENTS = (
    "@request-target",
    "@authority",
    "audiohook-organization-id",
    "audiohook-session-id",
    "audiohook-correlation-id",
    "x-api-key",
)
DERIVED = ("@request-target", "@authority", "@method", "@path", "@query")

BareItem = str | int | bool | bytes
Params = list[tuple[str, BareItem]]


class SignatureRefused(ValueError):
    """The upgrade's signature does not verify; the message says why (a retry cannot help)."""


def parse_keys(text: str) -> dict[str, bytes]:
    """``CUECARD_AUDIOHOOK_KEYS``: ``{"API key": "base64 client secret", ...}``."""
    if not text.strip():
        return {}
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not JSON ({err.msg})") from err
    if not isinstance(raw, dict) or not raw:
        raise ValueError("must be a JSON object mapping each API key to its client secret")
    keys = {}
    for api_key, secret in raw.items():
        try:
            keys[api_key] = (
                base64.b64decode(secret, validate=True) if isinstance(secret, str) else b""
            )
        except (binascii.Error, ValueError):
            keys[api_key] = b""
        if not api_key or not keys[api_key]:
            raise ValueError(f"API key {api_key!r} needs a non-empty base64 client secret")
    return keys


# -- RFC 8941, the part used here -------------------------------------------------------
_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_INT = re.compile(r"-?[0-9]{1,15}")


class _Reader:
    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0

    def peek(self) -> str:
        return self.text[self.i] if self.i < len(self.text) else ""

    def take(self, pattern: re.Pattern[str], what: str) -> str:
        m = pattern.match(self.text, self.i)
        if m is None:
            raise ValueError(f"expected {what} at {self.i}")
        self.i = m.end()
        return m.group(0)

    def skip(self, chars: str) -> None:
        while self.peek() and self.peek() in chars:
            self.i += 1

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise ValueError(f"expected {char!r} at {self.i}")
        self.i += 1


def _bare_item(r: _Reader) -> BareItem:
    c = r.peek()
    if c == '"':
        r.i += 1
        out = []
        while (c := r.peek()) != '"':
            if not c or not " " <= c <= "~":
                raise ValueError("bad string")
            if c == "\\":
                r.i += 1
                if r.peek() not in ('"', "\\"):
                    raise ValueError("bad escape")
                c = r.peek()
            out.append(c)
            r.i += 1
        r.i += 1
        return "".join(out)
    if c == ":":
        r.i += 1
        end = r.text.index(":", r.i)
        data = base64.b64decode(r.text[r.i : end], validate=True)
        r.i = end + 1
        return data
    if c == "?":
        r.i += 1
        flag = r.take(re.compile(r"[01]"), "?0 or ?1")
        return flag == "1"
    if c == "-" or c.isdigit():
        return int(r.take(_INT, "an integer"))
    return r.take(_TOKEN, "a token")


def _params(r: _Reader) -> Params:
    params: Params = []
    while r.peek() == ";":
        r.i += 1
        r.skip(" ")
        key = r.take(_KEY, "a parameter key")
        value: BareItem = True
        if r.peek() == "=":
            r.i += 1
            value = _bare_item(r)
        params.append((key, value))
    return params


def parse_dictionary(text: str) -> dict[str, tuple[BareItem | list[BareItem], Params]]:
    """An RFC 8941 dictionary: each member an item or an inner list, with its parameters."""
    r, out = _Reader(text.strip()), {}
    while r.peek():
        key = r.take(_KEY, "a dictionary key")
        value: BareItem | list[BareItem] = True
        if r.peek() == "=":
            r.i += 1
            if r.peek() == "(":
                r.i += 1
                items: list[BareItem] = []
                r.skip(" ")
                while r.peek() != ")":
                    items.append(_bare_item(r))
                    if _params(r):
                        raise ValueError("component parameters are not supported")
                    if r.peek() not in (" ", ")"):
                        raise ValueError(f"bad inner list at {r.i}")
                    r.skip(" ")
                r.i += 1
                value = items
            else:
                value = _bare_item(r)
        out[key] = (value, _params(r))
        r.skip(" \t")
        if r.peek():
            r.expect(",")
            r.skip(" \t")
    return out


def _serialize(item: BareItem) -> str:
    if isinstance(item, bool):
        return "?1" if item else "?0"
    if isinstance(item, int):
        return str(item)
    if isinstance(item, bytes):
        return ":" + base64.b64encode(item).decode() + ":"
    return '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'


def serialize_inner_list(items: list[str], params: Params) -> str:
    inner = " ".join(_serialize(i) for i in items)
    tail = "".join(f";{k}" if v is True else f";{k}={_serialize(v)}" for k, v in params)
    return f"({inner}){tail}"


def signature_base(components: list[str], values: Mapping[str, str], params: Params) -> str:
    lines = [f"{_serialize(name)}: {values[name]}" for name in components]
    lines.append(f'"@signature-params": {serialize_inner_list(components, params)}')
    return "\n".join(lines)


# -- signing (the reference client) and verifying ----------------------------------------
def sign(
    values: Mapping[str, str],
    api_key: str,
    secret: bytes,
    created: int,
    nonce: str,
    lifetime_s: int = 30,
) -> dict[str, str]:
    """``Signature-Input`` and ``Signature`` over ``values`` (component name -> value)."""
    components = list(values)
    params: Params = [
        ("keyid", api_key),
        ("nonce", nonce),
        ("alg", "hmac-sha256"),
        ("created", created),
        ("expires", created + lifetime_s),
    ]
    base = signature_base(components, values, params)
    mac = hmac.new(secret, base.encode(), hashlib.sha256).digest()
    return {
        "signature-input": "sig1=" + serialize_inner_list(components, params),
        "signature": "sig1=" + _serialize(mac),
    }


@dataclass
class SignatureVerifier:
    keys: Mapping[str, bytes]
    now: Callable[[], float]
    max_age_s: float = 10.0
    skew_s: float = 5.0
    nonces: ReplayCache = field(default_factory=ReplayCache)

    def verify(self, headers: Mapping[str, str], request_target: str, method: str = "GET") -> str:
        """The verified API key; raises ``SignatureRefused`` saying why not. ``headers``
        maps lower-case names to their (combined) values."""
        api_key = headers.get("x-api-key", "").strip()
        if not api_key:
            raise SignatureRefused("missing X-API-KEY header")
        try:
            inputs = parse_dictionary(headers.get("signature-input", ""))
            sigs = parse_dictionary(headers.get("signature", ""))
        except (ValueError, binascii.Error) as err:
            raise SignatureRefused(f"malformed signature header: {err}") from err
        if not inputs or not sigs:
            raise SignatureRefused("missing Signature-Input or Signature header")
        label, (covered, params) = next(iter(inputs.items()))
        mac = sigs.get(label, (None, []))[0]
        if not isinstance(covered, list) or not all(isinstance(c, str) for c in covered):
            raise SignatureRefused("Signature-Input must list the covered components")
        if not isinstance(mac, bytes):
            raise SignatureRefused(f"no signature labelled {label!r}")
        names = [str(c) for c in covered]
        p = self._check_params(dict(params), api_key)
        missing = [c for c in REQUIRED_COMPONENTS if c not in names]
        if missing or len(set(names)) != len(names):
            raise SignatureRefused(f"signature must cover {', '.join(REQUIRED_COMPONENTS)}")
        values = self._values(names, headers, request_target, method)
        secret = self.keys.get(api_key)
        key = secret if secret is not None else secrets.token_bytes(32)
        base = signature_base(names, values, params)
        good = hmac.compare_digest(hmac.new(key, base.encode(), hashlib.sha256).digest(), mac)
        if not good or secret is None:
            raise SignatureRefused("signature does not verify")
        self._remember(str(p["nonce"]), int(p["created"]))
        return api_key

    def _check_params(self, p: dict[str, BareItem], api_key: str) -> dict[str, BareItem]:
        if p.get("keyid") != api_key:
            raise SignatureRefused("signature keyid is not the X-API-KEY")
        if p.get("alg", "hmac-sha256") != "hmac-sha256":
            raise SignatureRefused(f"unsupported alg {p.get('alg')!r}")
        nonce, created, expires = p.get("nonce"), p.get("created"), p.get("expires")
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 256:
            raise SignatureRefused("signature needs a nonce of 16 to 256 characters")
        if type(created) is not int or (expires is not None and type(expires) is not int):
            raise SignatureRefused("created (and expires) must be integers")
        now = self.now()
        if created > now + self.skew_s:
            raise SignatureRefused("signature created in the future")
        if created < now - self.max_age_s - self.skew_s or (
            isinstance(expires, int) and expires < now - self.skew_s
        ):
            raise SignatureRefused("signature expired")
        if self.nonces.seen(nonce):
            raise SignatureRefused("signature replayed (nonce already used)")
        return p

    def _values(
        self, names: list[str], headers: Mapping[str, str], target: str, method: str
    ) -> dict[str, str]:
        path, _, query = target.partition("?")
        derived = {
            "@request-target": target,
            "@authority": headers.get("host", "").strip().lower(),
            "@method": method.upper(),
            "@path": path,
            "@query": "?" + query,
        }
        values = {}
        for name in names:
            if name.startswith("@"):
                if name not in DERIVED:
                    raise SignatureRefused(f"unsupported component {name!r}")
                values[name] = derived[name]
            elif name in ("signature", "signature-input") or name not in headers:
                raise SignatureRefused(f"component {name!r} is not a header of the request")
            else:
                values[name] = headers[name].strip()
        return values

    def _remember(self, nonce: str, created: int) -> None:
        forget_at = created + self.max_age_s + 2 * self.skew_s
        try:
            self.nonces.use(nonce, forget_at, self.now())
        except (NonceReplayed, ReplayCacheFull) as err:
            raise SignatureRefused(str(err)) from None
