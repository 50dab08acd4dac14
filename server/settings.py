"""Server settings, read from the environment once (``Settings.from_env``) and passed down.

Every variable is ``CUECARD_<FIELD>`` in upper case, e.g. ``CUECARD_PORT=9000``. Defaults are
the embedded ones: SQLite in the data directory, in-process bus, bundled tiny.en model.

Every value is checked here, at start-up, before any model loads: a malformed one raises
``SettingsError`` whose one-line message names the variable and says what it must be
(``cuecard serve`` prints it and exits with status 2). So does a ``CUECARD_*`` variable that is
no setting (a misspelling such as ``CUECARD_WEBHOOK_URL`` would otherwise be silently ignored).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from server.audiohook_auth import parse_keys as parse_audiohook_keys
from server.webrtc_offer import parse_ice_servers


class SettingsError(ValueError):
    """A configuration value is malformed; the message names the variable. Fix and restart."""


COMPUTE_TYPES = ("", "int8", "int8_float16", "int8_float32", "float16", "bfloat16", "float32")


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(base) / "cuecard"


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=default_data_dir)
    token: str = ""  # the static admin token; empty: read or create data_dir/token
    # Scoped tokens (JWT, server/auth.py): HS256 with this secret (>= 32 characters; empty:
    # read or create data_dir/jwt_secret), or RS256 verified with the PEM public key at
    # jwt_public_key (a path); exp/nbf checked with jwt_leeway_s of clock skew (0-300)
    jwt_secret: str = ""
    jwt_public_key: str = ""
    jwt_leeway_s: float = 30.0
    store: str = "sqlite"  # "sqlite" or a redis:// URL
    instance_id: str = ""  # with Redis: this instance's name, stable across restarts (host name)
    model: str = "tiny.en"
    vad: str = "silero"
    # Whisper: asr_workers decodes at once (0: one per core, at most 4; 1 on cuda, which
    # batches instead), each on asr_threads threads (models/whisper.py says why one)
    asr_threads: int = 1
    asr_workers: int = 0
    device: str = "cpu"  # Whisper on "cpu" or "cuda" (asked for, never detected by itself)
    compute_type: str = ""  # "": int8 on cpu, float16 on cuda; or int8_float16, int8, float32
    min_silence_ms: int = 300
    partial_every_ms: int = 640
    max_utterance_s: float = 15.0
    # > 0: a long utterance is committed piece by piece once this much of it is undecoded
    # (nlp/commit.py): long turns finalize as fast as short ones, at +1.0 / +1.6 WER points on
    # real calls (16 kHz / Twilio); 0 (default): every final decodes its whole utterance
    long_turn_commit_s: float = 0.0
    max_frame_bytes: int = 64_000
    twilio_auth_token: str = ""  # when set, X-Twilio-Signature is verified
    public_url: str = ""  # the URL Twilio dials (signature base), e.g. wss://host
    audiohook_keys: str = ""  # JSON {api_key: base64 client secret}; set: signatures required
    ice_servers: str = ""  # JSON [{"urls": "stun:…" | [...], "username"?, "credential"?}] (WebRTC)
    playbook: str = ""  # path of a playbook file; empty: the bundled defaults
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str = ""
    llm_base_url: str = ""  # an OpenAI-compatible endpoint; empty: built-in summaries
    llm_model: str = ""
    llm_api_key: str = ""
    retention_days: float = 0.0  # 0 keeps calls forever
    idle_timeout_s: float = 30.0  # a call with no audio this long is ended (timed_out)
    # Limits on what peers may send (docs/api.md, "Limits"); a breach closes the socket with a
    # code and a reason, and ends its call limit_exceeded or timed_out.
    start_timeout_s: float = 10.0  # an audio socket's start (Twilio: start) must come by then
    max_calls: int = 100  # live calls on this instance; one more is refused with 1013
    max_viewers_per_call: int = 20  # events sockets on one call; one more is refused with 1013
    max_viewers: int = 1000  # events sockets on this instance, all calls; more: 1013
    viewer_send_timeout_s: float = 10.0  # a viewer whose socket takes no data this long: 1013
    handshake_timeout_s: float = 10.0  # a request head (an upgrade's) not complete by then: 408
    max_text_bytes: int = 65_536  # a text message on an audio socket
    max_viewer_message_bytes: int = 4096  # a message from the rep's page (card actions)
    max_messages_per_s: float = 200.0  # per socket, beyond a burst of 2 s worth; 0: no limit
    max_audio_speed: float = 1.25  # audio s per wall s a source may send; 0: no limit
    audio_burst_s: float = 5.0  # audio a source may send ahead of that pace
    twilio_max_gap_s: float = 5.0  # a media.timestamp jump filled with silence; more: refused
    max_body_bytes: int = 1_048_576  # an HTTP request body; more: 413
    # Operations (docs/api.md, "Operations")
    log_format: str = "text"  # "text" or "json": one JSON object per line
    log_transcripts: int = 0  # 1: each final's text is logged (logger cuecard.transcripts)
    ready_asr_backlog: int = 16  # finals waiting for the recognizer at which /readyz fails
    # SIGTERM/SIGINT: how long the drain (live calls finished, viewers told, webhooks sent) may
    # take before the process exits; what is not done by then ends ``interrupted``
    drain_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536 and self.port != 0:
            raise SettingsError(f"CUECARD_PORT must be a TCP port (0-65535), got {self.port}")
        if not self.host:
            raise SettingsError("CUECARD_HOST must not be empty")
        if self.asr_threads < 1:
            raise SettingsError("CUECARD_ASR_THREADS must be >= 1")
        if not 0 <= self.asr_workers <= 64:
            raise SettingsError("CUECARD_ASR_WORKERS must be 0 (one per core) or 1-64")
        if self.device not in ("cpu", "cuda"):
            raise SettingsError(f"CUECARD_DEVICE must be cpu or cuda, got {self.device!r}")
        if self.compute_type not in COMPUTE_TYPES:
            raise SettingsError(
                f"CUECARD_COMPUTE_TYPE must be empty or one of {', '.join(COMPUTE_TYPES[1:])}, "
                f"got {self.compute_type!r}"
            )
        if self.vad not in ("silero", "webrtc"):
            raise SettingsError(f"CUECARD_VAD must be silero or webrtc, got {self.vad!r}")
        if not (self.store == "sqlite" or is_redis_url(self.store)):
            raise SettingsError(
                f"CUECARD_STORE must be sqlite or a redis:// URL, got {self.store!r}"
            )
        if self.long_turn_commit_s != 0 and not 2.0 <= self.long_turn_commit_s <= 60.0:
            raise SettingsError(
                f"CUECARD_LONG_TURN_COMMIT_S={self.long_turn_commit_s} must be 0 (off) or 2-60 s"
            )
        if not 100 <= self.min_silence_ms <= 3000:
            raise SettingsError("CUECARD_MIN_SILENCE_MS must be within [100, 3000]")
        self._check_limits()
        self._check_operations()
        if not (math.isfinite(self.retention_days) and self.retention_days >= 0):
            raise SettingsError(
                f"CUECARD_RETENTION_DAYS must be a number of days >= 0 (0 keeps calls forever), "
                f"got {self.retention_days}"
            )
        self._check_urls()
        self._check_jwt()
        try:
            parse_audiohook_keys(self.audiohook_keys)
        except ValueError as err:
            raise SettingsError(f"CUECARD_AUDIOHOOK_KEYS: {err}") from None
        try:
            parse_ice_servers(self.ice_servers)
        except ValueError as err:
            raise SettingsError(f"CUECARD_ICE_SERVERS: {err}") from None
        if self.playbook and not Path(self.playbook).expanduser().is_file():
            raise SettingsError(f"CUECARD_PLAYBOOK={self.playbook!r}: no such file")
        if is_redis_url(self.store):
            require_extra("CUECARD_STORE", "redis", "redis")
        if self.llm_base_url:
            require_extra("CUECARD_LLM_BASE_URL", "openai", "llm")

    def _check_limits(self) -> None:
        positive = ("partial_every_ms", "max_utterance_s", "max_frame_bytes", "idle_timeout_s",
                    "start_timeout_s", "max_calls", "max_viewers_per_call", "max_viewers",
                    "viewer_send_timeout_s", "handshake_timeout_s", "max_text_bytes",
                    "max_viewer_message_bytes", "audio_burst_s", "twilio_max_gap_s",
                    "max_body_bytes", "drain_s")  # fmt: skip
        for name in positive:
            if not getattr(self, name) > 0:
                raise SettingsError(
                    f"CUECARD_{name.upper()} must be > 0, got {getattr(self, name)}"
                )
        for name in ("max_messages_per_s", "max_audio_speed"):
            if not getattr(self, name) >= 0:
                raise SettingsError(
                    f"CUECARD_{name.upper()} must be >= 0 (0: no limit), got {getattr(self, name)}"
                )

    def _check_operations(self) -> None:
        if self.log_format not in ("text", "json"):
            raise SettingsError(f"CUECARD_LOG_FORMAT must be text or json, got {self.log_format!r}")
        if self.log_transcripts not in (0, 1):
            raise SettingsError(
                f"CUECARD_LOG_TRANSCRIPTS must be 0 or 1, got {self.log_transcripts}"
            )
        if self.ready_asr_backlog < 1:
            raise SettingsError(
                f"CUECARD_READY_ASR_BACKLOG must be >= 1, got {self.ready_asr_backlog}"
            )

    def _check_urls(self) -> None:
        for url in self.webhook_urls:
            if not _is_url(url, ("http", "https")):
                raise SettingsError(
                    f"CUECARD_WEBHOOK_URLS: {url!r} is not an http:// or https:// URL "
                    "(separate several URLs with commas)"
                )
        if self.webhook_urls and not self.webhook_secret:
            raise SettingsError("CUECARD_WEBHOOK_SECRET must be set when CUECARD_WEBHOOK_URLS is")
        if self.llm_base_url and not _is_url(self.llm_base_url, ("http", "https")):
            raise SettingsError(
                f"CUECARD_LLM_BASE_URL={self.llm_base_url!r} is not an http:// or https:// URL "
                "(e.g. http://127.0.0.1:11434/v1)"
            )
        if self.public_url and not _is_url(self.public_url, ("ws", "wss", "http", "https")):
            raise SettingsError(
                f"CUECARD_PUBLIC_URL={self.public_url!r} is not a wss:// or https:// URL"
            )

    def _check_jwt(self) -> None:
        if not (math.isfinite(self.jwt_leeway_s) and 0 <= self.jwt_leeway_s <= 300):
            raise SettingsError(
                f"CUECARD_JWT_LEEWAY_S must be within [0, 300] seconds, got {self.jwt_leeway_s}"
            )
        if self.jwt_secret and self.jwt_public_key:
            raise SettingsError(
                "CUECARD_JWT_SECRET (HS256) and CUECARD_JWT_PUBLIC_KEY (RS256): set one, not both"
            )
        if self.jwt_secret and len(self.jwt_secret) < 32:
            raise SettingsError("CUECARD_JWT_SECRET must be at least 32 characters")
        if self.jwt_public_key:
            try:
                rsa_public_key(Path(self.jwt_public_key).expanduser())
            except (OSError, ValueError) as err:
                raise SettingsError(
                    f"CUECARD_JWT_PUBLIC_KEY={self.jwt_public_key!r}: {err}"
                ) from None

    @property
    def secret_configured(self) -> bool:
        """Whether a token secret was set up (in the environment), rather than generated
        into the data directory: without one the server binds to loopback only."""
        return bool(self.token or self.jwt_secret or self.jwt_public_key)

    def resolved_jwt_secret(self) -> str:
        """The HS256 secret: configured, or kept in ``data_dir/jwt_secret`` (created 0600)."""
        return self.jwt_secret or _kept_secret(self.data_dir / "jwt_secret", 48)

    @property
    def resolved_asr_workers(self) -> int:
        """The Whisper workers: ``asr_workers``, or by default one per core (at most 4) on the
        CPU and one on cuda (where the scheduler batches)."""
        if self.asr_workers:
            return self.asr_workers
        if self.device == "cuda":
            return 1
        return max(1, min(4, (os.cpu_count() or 1) // self.asr_threads))

    @property
    def retention_s(self) -> float | None:
        """The maximum age of a stored call in seconds, or None to keep calls forever."""
        return self.retention_days * 86_400.0 if self.retention_days > 0 else None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``CUECARD_*`` variables; ``overrides`` (e.g. CLI flags) win."""
        env = dict(os.environ if env is None else env)
        _reject_unknown(env, {f"CUECARD_{f.name.upper()}" for f in dataclasses.fields(cls)})
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"CUECARD_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _parse(f.name, raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except TypeError as err:
            raise SettingsError(str(err)) from err

    def resolved_token(self) -> str:
        """The bearer token: configured, or kept in ``data_dir/token`` (created 0600)."""
        return self.token or _kept_secret(self.data_dir / "token", 24)


def _kept_secret(path: Path, n_bytes: int) -> str:
    """The secret in ``path``, or a new random one written there (0600)."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(n_bytes)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def rsa_public_key(path: Path) -> str:
    """The PEM text of the RSA public key at ``path``; ValueError if it is none."""
    from jwt.algorithms import RSAAlgorithm
    from jwt.exceptions import InvalidKeyError

    pem = path.read_text()
    try:
        key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
    except InvalidKeyError as err:
        raise ValueError(f"not an RSA key in PEM form ({err})") from None
    if not hasattr(key, "verify") or hasattr(key, "sign"):
        raise ValueError("must be the RSA *public* key (PEM), not the private key")
    return pem


def require_extra(variable: str, module: str, extra: str) -> None:
    """The optional path ``variable`` selects needs ``module``, which the default install lacks
    (pyproject.toml's extras): a SettingsError naming the variable and the install command."""
    if importlib.util.find_spec(module) is None:
        raise SettingsError(
            f"{variable} needs the {module} package, which is not installed: "
            f"pip install -e '.[{extra}]' in the cuecard folder"
        )


# CUECARD_* variables read outside Settings: the model cache (models/registry.py).
OTHER_VARIABLES = frozenset({"CUECARD_CACHE_DIR"})


def _reject_unknown(env: dict[str, str], known: set[str]) -> None:
    known = known | OTHER_VARIABLES
    for var in sorted(v for v in env if v.startswith("CUECARD_") and v not in known):
        close = difflib.get_close_matches(var, sorted(known), n=1)
        hint = (
            f"did you mean {close[0]}?"
            if close
            else "the settings are listed in server/settings.py"
        )
        raise SettingsError(f"{var} is not a Cuecard setting ({hint})")


def is_redis_url(text: str) -> bool:
    """Whether ``text`` names a Redis store (``CUECARD_STORE=redis://…`` or ``rediss://…``)."""
    return text.startswith(("redis://", "rediss://"))


def _is_url(text: str, schemes: tuple[str, ...]) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 (raises ValueError on a malformed port)
    except ValueError:
        return False
    return parts.scheme in schemes and bool(parts.hostname) and " " not in text


def _parse(name: str, raw: str, kind: object) -> Any:
    var = f"CUECARD_{name.upper()}"
    text = str(kind)
    try:
        if text == "int":
            return int(raw)
        if text == "float":
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if text == "Path":
            return Path(raw).expanduser()
        if text.startswith("tuple"):
            return tuple(u.strip() for u in raw.split(",") if u.strip())
    except ValueError as err:
        what = {"int": "an integer", "float": "a finite number"}.get(text, text)
        raise SettingsError(f"{var}={raw!r} is not {what}") from err
    return raw
