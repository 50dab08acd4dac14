"""Who is asking: bearer tokens for our endpoints, Twilio's request signature for its stream.

Browsers cannot set headers on a WebSocket, so the token is also accepted as ``?token=``.
Comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from starlette.requests import HTTPConnection


class Authenticator:
    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("an empty token would let anyone in")
        self._token = token.encode()

    def check(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self._token)

    def allows(self, conn: HTTPConnection) -> bool:
        header = conn.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            return self.check(header[7:].strip())
        return self.check(conn.query_params.get("token"))


def twilio_signature(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 of the URL followed by the sorted
    POST parameters (none for a WebSocket upgrade), keyed with the account auth token."""
    data = url + "".join(k + v for k, v in sorted((params or {}).items()))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def twilio_signature_valid(auth_token: str, url: str, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(twilio_signature(auth_token, url), presented)
