"""Scoped tokens without sockets: grants, JWT checks (expiry, nbf, leeway, algorithms, keys),
minting, ``cuecard token create``, the refusal log, Twilio's one-use stream URLs, settings."""

from __future__ import annotations

import argparse
import io
import os
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from server.auth import (
    ADMIN,
    ANY_CALL,
    FailureLog,
    Grant,
    JwtKey,
    Scope,
    TokenVerifier,
    TwilioUpgrade,
    Unauthenticated,
    mint,
    parse_scopes,
    parse_ttl,
    safe_host,
    twilio_signature,
    twilio_stream_url,
)
from server.cli import build_parser
from server.clock import ManualClock
from server.nonces import NonceReplayed, ReplayCache, ReplayCacheFull
from server.settings import Settings, SettingsError
from server.token_cli import run_create

NOW = 1_800_000_000.0
SECRET = "s" * 40
HS = JwtKey("HS256", SECRET)


def token(
    scope: str = "events:read",
    call: str = "c-42",
    ttl_s: float = 3600,
    now: float = NOW,
    key: str = SECRET,
    alg: str = "HS256",
    **claims: object,
) -> str:
    body = {"sub": "ana", "scope": scope, "call": call, "iat": int(now), "nbf": int(now)}
    body["exp"] = int(now + ttl_s)
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg)


def verifier(leeway_s: float = 30.0, key: JwtKey = HS) -> TokenVerifier:
    return TokenVerifier("static-admin-token", key, leeway_s)


# -- grants ---------------------------------------------------------------------------------
VIEWER = Grant("ana", frozenset({"events:read", "cards:act"}), "c-42", 3600.0)
ALL_CALLS = Grant("mgr", frozenset({"events:read"}), ANY_CALL, 3600.0)
AUDIO = Grant("pbx", frozenset({"audio:write"}), "c-42", 3600.0)


@pytest.mark.parametrize(
    ("grant", "scope", "call_id", "allowed"),
    [
        (VIEWER, "events:read", "c-42", True),
        (VIEWER, "cards:act", "c-42", True),
        (VIEWER, "events:read", "c-43", False),  # another call
        (VIEWER, "events:read", ANY_CALL, False),  # a list over every call
        (VIEWER, "audio:write", "c-42", False),
        (VIEWER, "admin", ANY_CALL, False),
        (VIEWER, "events:read", None, True),  # some call (before the id is known)
        (ALL_CALLS, "events:read", "c-1", True),
        (ALL_CALLS, "events:read", ANY_CALL, True),
        (ALL_CALLS, "cards:act", "c-1", False),
        (AUDIO, "audio:write", "c-42", True),
        (AUDIO, "audio:write", "c-9", False),
        (AUDIO, "events:read", "c-42", False),
        (ADMIN, "audio:write", "any", True),
        (ADMIN, "admin", ANY_CALL, True),
    ],
)
def test_grant_allows_its_scopes_on_its_call(
    grant: Grant, scope: Scope, call_id: str | None, allowed: bool
) -> None:
    """A scope is allowed on the token's call or on any call for `*`; admin allows all."""
    assert grant.allows(scope, call_id) is allowed


def test_a_refusal_says_which_scope_or_call_is_missing() -> None:
    """The reason names the scope lacking, or the call the token is for."""
    assert VIEWER.refusal("audio:write", "c-42") == "token lacks the audio:write scope"
    assert "for call 'c-42', not call 'c-43'" in (VIEWER.refusal("events:read", "c-43") or "")
    assert "every call (*)" in (VIEWER.refusal("events:read", ANY_CALL) or "")


@pytest.mark.parametrize(
    ("grant", "viewer"),
    [
        (VIEWER, True),
        (ALL_CALLS, True),
        (AUDIO, False),  # audio tokens never ride in a URL
        (ADMIN, False),  # nor the static token
        (Grant("a", frozenset({"admin"}), "*", 60.0), False),
        (Grant("a", frozenset({"events:read"}), "c", 86_400.0), True),
        (Grant("a", frozenset({"events:read"}), "c", 86_401.0), False),  # too long-lived
    ],
)
def test_only_short_lived_viewer_tokens_may_travel_as_a_query(grant: Grant, viewer: bool) -> None:
    """?token= takes JWTs without audio:write or admin that live at most 24 h."""
    assert grant.viewer_only is viewer


# -- verifying ------------------------------------------------------------------------------
def test_a_valid_token_grants_its_claims() -> None:
    """sub, scope (space or comma separated), call and its lifetime come back as a Grant."""
    grant = verifier().verify(token("events:read,cards:act"), NOW + 10)
    assert grant == Grant("ana", frozenset({"events:read", "cards:act"}), "c-42", 3600.0)
    assert verifier().verify("static-admin-token", NOW) is ADMIN


@pytest.mark.parametrize(
    ("presented", "at", "leeway_s", "needle"),
    [
        (token(ttl_s=60), NOW + 60 + 31, 30, "expired"),
        (token(ttl_s=60), NOW + 60 + 301, 300, "expired"),
        (token(now=NOW + 100), NOW + 100 - 31, 30, "not valid yet"),
        (token(now=NOW, iat=int(NOW + 500)), NOW, 30, "issued in the future"),
        (token(key="k" * 40), NOW, 30, "Signature verification failed"),  # wrong key
        (token(exp=None), NOW, 30, 'missing the "exp" claim'),
        (token(sub=None), NOW, 30, 'missing the "sub" claim'),
        (token(scope=None), NOW, 30, 'missing the "scope" claim'),
        (token(call=None), NOW, 30, 'missing the "call" claim'),
        (token(scope="events:read root"), NOW, 30, "unknown scope 'root'"),
        (token(scope=""), NOW, 30, "no scope"),
        (token(call="../etc"), NOW, 30, "call must be a call id"),
        (token(exp="tomorrow"), NOW, 30, "exp must be a number"),
        (token(sub=""), NOW, 30, "sub must be a name"),
        ("wrong", NOW, 30, "wrong token"),
        ("a.b.c", NOW, 30, "invalid token"),
    ],
)
def test_invalid_tokens_are_refused_saying_why(
    presented: str, at: float, leeway_s: float, needle: str
) -> None:
    """Expired and not-yet-valid beyond the leeway, a wrong key, missing or bad claims."""
    with pytest.raises(Unauthenticated, match=needle) as caught:
        verifier(leeway_s).verify(presented, at)
    assert presented not in str(caught.value) or presented == "wrong"


@pytest.mark.parametrize(
    ("presented", "at"),
    [
        (token(ttl_s=60), NOW + 60 + 29),  # expired, within the 30 s leeway
        (token(now=NOW + 100), NOW + 100 - 29),  # not valid for another 29 s
    ],
)
def test_clock_skew_within_the_leeway_is_tolerated(presented: str, at: float) -> None:
    assert verifier(30).verify(presented, at).subject == "ana"


def test_the_leeway_is_bounded() -> None:
    with pytest.raises(ValueError, match="leeway"):
        verifier(301)


def test_alg_none_is_refused() -> None:
    """An unsigned token (alg none) is never accepted, whatever it claims."""
    unsigned = jwt.encode(
        {"sub": "x", "scope": "admin", "call": "*", "exp": int(NOW + 60)}, None, algorithm="none"
    )
    with pytest.raises(Unauthenticated, match="alg"):
        verifier().verify(unsigned, NOW)


@pytest.fixture(scope="module")
def rsa_pem(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A private key's PEM and the path of its public key's PEM."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path = tmp_path_factory.mktemp("rsa") / "public.pem"
    path.write_bytes(public)
    return private, path


def test_rs256_verifies_with_the_public_key_and_refuses_hs256(rsa_pem: tuple[str, Path]) -> None:
    """With RS256 configured, a token signed with the private key passes; an HS256 token
    (even one keyed with the public key's text: algorithm confusion) does not."""
    private, public_path = rsa_pem
    public = public_path.read_text()
    rs = verifier(key=JwtKey("RS256", public))
    minted = mint(private, "RS256", "crm", ["audio:write"], "*", 600, NOW)
    assert rs.verify(minted, NOW).scopes == {"audio:write"}
    with pytest.raises(Unauthenticated, match="alg"):
        rs.verify(token(), NOW)
    with pytest.raises(Unauthenticated):
        rs.verify(token(key="x" * 40, alg="HS256"), NOW)


def test_minted_tokens_verify_and_carry_bounded_claims() -> None:
    """mint() writes sub, scope, call, iat, nbf, exp; bad arguments are refused."""
    minted = mint(SECRET, "HS256", "ana", ["cards:act", "events:read"], "c-42", 12 * 3600, NOW)
    off = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}
    claims = jwt.decode(minted, SECRET, algorithms=["HS256"], options=off)
    assert claims == {
        "sub": "ana",
        "scope": "events:read cards:act",
        "call": "c-42",
        "iat": int(NOW),
        "nbf": int(NOW),
        "exp": int(NOW) + 12 * 3600,
    }
    for bad in (
        dict(subject=""),
        dict(call="bad id"),
        dict(ttl_s=31 * 86_400),
        dict(ttl_s=0),
        dict(scopes=[]),
    ):
        args = {"subject": "ana", "scopes": ["events:read"], "call": "c", "ttl_s": 60.0} | bad
        with pytest.raises(ValueError):
            mint(SECRET, "HS256", now=NOW, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("12h", 43_200), ("1.5d", 129_600)]
)
def test_ttl_units(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["12", "12w", "-1h", "0s", "31d", "h"])
def test_bad_ttls_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)


def test_scopes_split_on_commas_or_spaces() -> None:
    assert parse_scopes("events:read, cards:act") == {"events:read", "cards:act"}
    assert parse_scopes("admin") == {"admin"}
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes("events:write")


# -- cuecard token create -------------------------------------------------------------------
def create(tmp_path: Path, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["token", "create", "--data-dir", str(tmp_path), *argv])
    assert isinstance(args, argparse.Namespace)
    out = io.StringIO()
    return run_create(args, out, ManualClock(NOW)), out.getvalue()


def test_token_create_prints_a_token_the_server_accepts(tmp_path: Path) -> None:
    """`token create --rep ana --call c-42 --scope events:read,cards:act --ttl 12h` prints
    one line, a JWT signed with the data dir's secret (created 0600), which verifies."""
    argv = ("--rep", "ana", "--call", "c-42", "--scope", "events:read,cards:act", "--ttl", "12h")
    status, out = create(tmp_path, *argv)
    assert status == 0 and out.count("\n") == 1
    secret_file = tmp_path / "jwt_secret"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    key = JwtKey("HS256", secret_file.read_text().strip())
    grant = TokenVerifier("other", key).verify(out.strip(), NOW + 1)
    assert grant == Grant("ana", frozenset({"events:read", "cards:act"}), "c-42", 43_200.0)


def test_token_create_for_an_integration_with_rs256(
    tmp_path: Path, rsa_pem: tuple[str, Path]
) -> None:
    private, public_path = rsa_pem
    key_file = tmp_path / "private.pem"
    key_file.write_text(private)
    argv = ("--sub", "crm", "--call", "*", "--scope", "audio:write", "--private-key", str(key_file))
    status, out = create(tmp_path, *argv)
    assert status == 0
    grant = TokenVerifier("x", JwtKey("RS256", public_path.read_text())).verify(out.strip(), NOW)
    assert grant.subject == "crm" and grant.call == "*" and grant.lifetime_s == 12 * 3600


@pytest.mark.parametrize(
    "argv",
    [
        ("--rep", "ana", "--call", "c", "--scope", "events:write"),
        ("--rep", "ana", "--call", "c", "--scope", "events:read", "--ttl", "90d"),
        ("--rep", "ana", "--call", "no such/call", "--scope", "events:read"),
    ],
)
def test_token_create_refuses_bad_arguments(tmp_path: Path, argv: tuple[str, ...]) -> None:
    status, out = create(tmp_path, *argv)
    assert status == 2 and out == ""


# -- the refusal log ------------------------------------------------------------------------
def test_refusals_are_logged_once_per_peer_per_window_with_a_count() -> None:
    """One line per peer per 10 s; the next line says how many were not written."""
    log = FailureLog(interval_s=10.0)
    seen = [log.note("10.0.0.1", t) for t in (0.0, 1.0, 2.0, 9.9, 10.0, 10.5, 30.0)]
    assert seen == [0, None, None, None, 3, None, 1]
    assert log.note("10.0.0.2", 10.5) == 0  # another peer has its own window


def test_the_refusal_log_is_bounded() -> None:
    """Beyond max_peers distinct peers, new ones share one entry instead of growing memory."""
    log = FailureLog(interval_s=10.0, max_peers=3)
    assert [log.note(f"p{i}", 0.0) for i in range(3)] == [0, 0, 0]
    assert log.note("p3", 1.0) == 0  # the shared entry's first line
    assert log.note("p4", 1.0) is None  # shares it
    assert len(log._peers) <= 4


# -- nonces and Twilio ----------------------------------------------------------------------
def test_replay_cache_refuses_a_nonce_twice_and_stays_bounded() -> None:
    cache = ReplayCache(max_nonces=2)
    cache.use("a", forget_at=10, now=0)
    with pytest.raises(NonceReplayed):
        cache.use("a", forget_at=10, now=5)
    cache.use("b", forget_at=10, now=5)
    with pytest.raises(ReplayCacheFull):
        cache.use("c", forget_at=20, now=6)  # full of live nonces: refused, not forgotten
    cache.use("c", forget_at=20, now=11)  # a and b expired: room again
    assert len(cache) == 1


PUBLIC = "wss://cuecard.example"
TWILIO_TOKEN = "twilio-auth-token"


def signed(now: float = NOW, nonce: str = "n" * 24) -> tuple[str, str]:
    """The query and X-Twilio-Signature of a stream URL made at ``now``."""
    url = twilio_stream_url(PUBLIC, now, nonce)
    return url.split("?", 1)[1], twilio_signature(TWILIO_TOKEN, url)


def test_a_twilio_stream_url_is_good_once() -> None:
    """A signed URL with a fresh nonce and ts passes; the same upgrade again is refused."""
    upgrade = TwilioUpgrade(TWILIO_TOKEN, PUBLIC)
    query, signature = signed()
    assert upgrade.refusal(query, signature, NOW + 2) is None
    assert "already used" in (upgrade.refusal(query, signature, NOW + 3) or "")


@pytest.mark.parametrize(
    ("query_signature", "at", "needle"),
    [
        (signed(), NOW + 331, "outside the window"),  # 5 min + the 30 s leeway
        (signed(NOW + 60), NOW, "outside the window"),  # from the future
        (("nonce=" + "n" * 24 + "&ts=1", signed()[1]), NOW, "bad X-Twilio-Signature"),
        (("", twilio_signature(TWILIO_TOKEN, PUBLIC + "/v1/twilio")), NOW, "needs ?nonce="),
        ((signed()[0], None), NOW, "bad X-Twilio-Signature"),
        (signed(nonce="short"), NOW, "needs ?nonce="),
    ],
)
def test_stale_forged_or_bare_twilio_upgrades_are_refused(
    query_signature: tuple[str, str | None], at: float, needle: str
) -> None:
    """The old fixed URL (no nonce), a stale or future ts, an edited query, no signature."""
    query, signature = query_signature
    assert needle in (TwilioUpgrade(TWILIO_TOKEN, PUBLIC).refusal(query, signature, at) or "")


# -- binding and settings -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("host", "configured", "bound", "warned"),
    [
        ("0.0.0.0", False, "127.0.0.1", True),
        ("10.1.2.3", False, "127.0.0.1", True),
        ("::", False, "127.0.0.1", True),
        ("127.0.0.1", False, "127.0.0.1", False),
        ("::1", False, "::1", False),
        ("localhost", False, "localhost", False),
        ("0.0.0.0", True, "0.0.0.0", False),
    ],
)
def test_without_a_configured_secret_only_loopback_is_bound(
    host: str, configured: bool, bound: str, warned: bool
) -> None:
    got, warning = safe_host(host, configured)
    assert got == bound and (warning is not None) is warned


def test_jwt_settings_are_checked(tmp_path: Path, rsa_pem: tuple[str, Path]) -> None:
    """Leeway within 0-300 s, a secret of at least 32 characters, one of HS256 / RS256, a
    public key that is one; only settings from the environment count as configured."""
    env = {"CUECARD_DATA_DIR": str(tmp_path)}
    for extra, needle in [
        ({"CUECARD_JWT_LEEWAY_S": "301"}, "CUECARD_JWT_LEEWAY_S"),
        ({"CUECARD_JWT_SECRET": "short"}, "at least 32"),
        ({"CUECARD_JWT_SECRET": SECRET, "CUECARD_JWT_PUBLIC_KEY": str(rsa_pem[1])}, "not both"),
        ({"CUECARD_JWT_PUBLIC_KEY": str(tmp_path / "none.pem")}, "CUECARD_JWT_PUBLIC_KEY"),
    ]:
        with pytest.raises(SettingsError, match=needle):
            Settings.from_env({**env, **extra})
    private = tmp_path / "private.pem"
    private.write_text(rsa_pem[0])
    with pytest.raises(SettingsError, match="public"):
        Settings.from_env({**env, "CUECARD_JWT_PUBLIC_KEY": str(private)})
    generated = Settings.from_env(env)
    assert not generated.secret_configured
    secret = generated.resolved_jwt_secret()
    assert len(secret) >= 32 and generated.resolved_jwt_secret() == secret
    assert os.stat(tmp_path / "jwt_secret").st_mode & 0o777 == 0o600
    assert Settings.from_env({**env, "CUECARD_JWT_SECRET": SECRET}).secret_configured
    assert Settings.from_env({**env, "CUECARD_TOKEN": "t"}).secret_configured
