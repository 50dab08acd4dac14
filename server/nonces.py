"""A bounded memory of nonces already used, so a signed request cannot be replayed.

``ReplayCache.use(nonce, forget_at, now)`` remembers ``nonce`` until ``forget_at`` (the time
after which its signature could no longer pass its own age check, so forgetting it then lets
nothing through) and refuses one it has seen. When full of nonces still live, new ones are
refused (``ReplayCacheFull``, a retry shortly can help) rather than a replay let through.
Sans-I/O: the caller passes the time. The AudioHook upgrade signatures
(``server.audiohook_auth``) and the Twilio stream URLs (``server.auth``) both use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class NonceReplayed(ValueError):
    """The nonce was used before: a replayed request (a retry cannot help)."""


class ReplayCacheFull(ValueError):
    """Too many nonces still live to remember another; a retry shortly can help."""


@dataclass(slots=True)
class ReplayCache:
    max_nonces: int = 100_000
    _seen: dict[str, float] = field(default_factory=dict)  # nonce -> when it may be forgotten

    def seen(self, nonce: str) -> bool:
        return nonce in self._seen

    def use(self, nonce: str, forget_at: float, now: float) -> None:
        """Remember ``nonce`` until ``forget_at``; ``NonceReplayed`` if it is remembered."""
        if nonce in self._seen and self._seen[nonce] > now:
            raise NonceReplayed("nonce already used")
        if len(self._seen) >= self.max_nonces:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
        if len(self._seen) >= self.max_nonces:
            raise ReplayCacheFull("too many connections in the replay window; retry shortly")
        self._seen[nonce] = forget_at

    def __len__(self) -> int:
        return len(self._seen)
