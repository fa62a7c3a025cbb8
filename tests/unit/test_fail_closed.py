"""Fail closed: token verification with rotating JWKS, no kid guessing, a maximum token lifetime, clean
401s for hostile tokens; `lhcie serve` refuses settings with no safe default; private data files."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric import ec

from shared import auth
from shared.auth import KeySet, TokenVerifier, Unauthorized
from tests.helpers import eventually
from tests.unit.test_document_flow import post_document, stored

ROOT = Path(__file__).resolve().parents[2]
ISSUER, AUDIENCE = "https://idp.example", "lhcie"


class Provider:
    """An identity provider's JWKS endpoint whose keys can be rotated; counts the fetches."""

    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {"k1": ec.generate_private_key(ec.SECP256R1())}
        self.fetches = 0

    def jwks(self) -> dict[str, Any]:
        entries = []
        for kid, key in self.keys.items():
            entry = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            entries.append({**entry, "kid": kid, "use": "sig", "alg": "ES256"})
        return {"keys": entries}

    def token(self, kid: str | None, *, lifetime: int = 600, key: str | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "dr@RJ1",
            "iat": now,
            "exp": now + lifetime,
            "org": "RJ1",
            "role": "clinician",
            **claims,
        }
        headers = {"kid": kid} if kid else {}
        return jwt.encode(body, self.keys[key or kid or "k1"], algorithm="ES256", headers=headers)


@pytest.fixture
async def provider() -> AsyncIterator[tuple[Provider, str]]:
    idp = Provider()

    async def jwks(_: web.Request) -> web.Response:
        idp.fetches += 1
        return web.json_response(idp.jwks())

    app = web.Application()
    app.router.add_get("/jwks", jwks)
    async with TestServer(app) as server:
        yield idp, str(server.make_url("/jwks"))


def bearer(token: str) -> str:
    return f"Bearer {token}"


async def verified(verifier: TokenVerifier, token: str) -> str:
    await verifier.prepare(bearer(token))
    return verifier.verify(bearer(token)).subject


async def test_rotated_keys_are_fetched_on_an_unknown_kid_at_a_limited_rate(provider: tuple[Provider, str]) -> None:
    idp, url = provider
    keys = KeySet(url=url, min_refetch=30)
    await keys.load()
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
    assert await verified(verifier, idp.token("k1")) == "dr@RJ1"
    # The provider rotates: the new key is fetched when a token first names it.
    idp.keys = {"k2": ec.generate_private_key(ec.SECP256R1())}
    keys._fetched -= 31  # the last fetch is older than the refetch interval
    assert await verified(verifier, idp.token("k2")) == "dr@RJ1"
    assert idp.fetches == 2
    # Made-up key ids do not turn into a fetch each.
    for n in range(20):
        with pytest.raises(Unauthorized) as refused:
            await verified(verifier, idp.token(f"bogus-{n}", key="k2"))
        assert refused.value.reason_code == "unknown-key"
    assert idp.fetches == 2


async def test_a_token_without_kid_is_refused_when_the_set_holds_several_keys(provider: tuple[Provider, str]) -> None:
    idp, _ = provider
    alone = TokenVerifier(idp.jwks(), issuer=ISSUER, audience=AUDIENCE)
    assert await verified(alone, idp.token(None)) == "dr@RJ1"
    idp.keys["k2"] = ec.generate_private_key(ec.SECP256R1())
    several = TokenVerifier(idp.jwks(), issuer=ISSUER, audience=AUDIENCE)
    with pytest.raises(Unauthorized) as refused:
        await verified(several, idp.token(None))
    assert refused.value.reason_code == "no-kid"


async def test_a_token_valid_for_longer_than_the_maximum_is_refused(provider: tuple[Provider, str]) -> None:
    idp, _ = provider
    verifier = TokenVerifier(idp.jwks(), issuer=ISSUER, audience=AUDIENCE, max_lifetime=24 * 3600)
    assert await verified(verifier, idp.token("k1", lifetime=24 * 3600)) == "dr@RJ1"
    for token in (
        idp.token("k1", lifetime=10 * 365 * 24 * 3600),
        # a recent 'iat' does not make a ten-year 'exp' acceptable
        idp.token("k1", lifetime=10 * 365 * 24 * 3600, iat=int(time.time()) + 10 * 365 * 24 * 3600 - 60),
    ):
        with pytest.raises(Unauthorized) as refused:
            await verified(verifier, token)
        assert refused.value.reason_code in ("token-lifetime", "invalid-token")
    no_iat = jwt.encode(
        {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60, "org": "RJ1", "role": "clinician"},
        idp.keys["k1"],
        algorithm="ES256",
        headers={"kid": "k1"},
    )
    with pytest.raises(Unauthorized):
        await verified(verifier, no_iat)


async def test_a_remembered_token_spares_no_check_that_could_now_fail(provider: tuple[Provider, str]) -> None:
    """Verified tokens are remembered by their exact bytes (intake's JWT cost, issue 21): a token that
    differs in a byte, a wrong signature, an expired token and a key withdrawn at the provider are still
    refused after a valid token was remembered."""
    idp, url = provider
    keys = KeySet(url=url, min_refetch=30)
    await keys.load()
    verifier = TokenVerifier(keys, issuer=ISSUER, audience=AUDIENCE)
    good = idp.token("k1")
    assert await verified(verifier, good) == "dr@RJ1"
    assert verifier.verify(bearer(good)) is verifier.verify(bearer(good))  # remembered: the same caller
    # Same header and claims, another key's signature under the same kid: other bytes, verified in full.
    impostor_key = ec.generate_private_key(ec.SECP256R1())
    header, payload, _ = good.split(".")
    forged = jwt.encode(jwt.decode(good, options={"verify_signature": False}), impostor_key, "ES256", {"kid": "k1"})
    assert forged.split(".")[:2] == [header, payload]
    with pytest.raises(Unauthorized) as refused:
        await verified(verifier, forged)
    assert refused.value.reason_code == "invalid-token"
    # The remembered token's signature on other claims (another org) does not verify either.
    tampered = ".".join(
        [header, _segment({**jwt.decode(good, options={"verify_signature": False}), "org": "X"}), good.split(".")[2]]
    )
    with pytest.raises(Unauthorized):
        await verified(verifier, tampered)
    # A remembered token is refused from the moment it expires, as PyJWT judges it (exp <= now).
    short = idp.token("k1", lifetime=1)
    assert await verified(verifier, short) == "dr@RJ1"
    expiry = jwt.decode(short, options={"verify_signature": False})["exp"]

    async def past_expiry() -> bool:
        return time.time() >= expiry

    await eventually(past_expiry, timeout=5)
    with pytest.raises(Unauthorized) as refused:
        await verified(verifier, short)
    assert refused.value.reason_code == "token-expired"
    # The provider withdraws k1: once the set is fetched again (here, at its maximum age), a token
    # remembered under k1 is verified in full against the new set, and refused.
    assert await verified(verifier, good) == "dr@RJ1"
    idp.keys = {"k2": ec.generate_private_key(ec.SECP256R1())}
    keys._fetched -= keys._max_age + 1
    with pytest.raises(Unauthorized) as refused:
        await verified(verifier, good)
    assert refused.value.reason_code == "unknown-key"
    assert idp.fetches == 2
    assert await verified(verifier, idp.token("k2")) == "dr@RJ1"


def test_remembered_tokens_are_bounded(provider: tuple[Provider, str]) -> None:
    idp, _ = provider
    verifier = TokenVerifier(idp.jwks(), issuer=ISSUER, audience=AUDIENCE)
    tokens = [idp.token("k1", sub=f"user-{n}") for n in range(auth.VERIFIED_TOKENS + 10)]
    assert [verifier.verify(bearer(t)).subject for t in tokens] == [f"user-{n}" for n in range(len(tokens))]
    assert len(verifier._verified) == auth.VERIFIED_TOKENS
    assert tokens[0] not in verifier._verified and tokens[-1] in verifier._verified
    assert verifier.verify(bearer(tokens[0])).subject == "user-0"  # forgotten, verified again in full


def _segment(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


async def test_hostile_tokens_are_a_clean_401(stack: TestClient, tokens: Any, caplog: pytest.LogCaptureFixture) -> None:
    kid = tokens.issuer.kid
    now = int(time.time())
    claims = {
        "iss": "lhcie-embedded",
        "aud": "lhcie",
        "sub": "x",
        "iat": now,
        "exp": now + 60,
        "org": "RJ1",
        "role": "system",
    }
    hostile = [
        f"{_segment({'alg': 'RS256', 'kid': kid})}.{_segment(claims)}.c2lnbmF0dXJl",
        f"{_segment({'alg': 'RS256', 'kid': kid})}.garbage.garbage",
        f"{_segment({'alg': 'HS256', 'kid': kid})}.{_segment(claims)}.c2ln",
        f"{_segment({'alg': 'none', 'kid': kid})}.{_segment(claims)}.",
        f"{_segment({'alg': 'ES256', 'kid': ['a']})}.{_segment(claims)}.c2ln",
        tokens("RJ1", "system", ttl=10 * 365 * 24 * 3600),
    ]
    with caplog.at_level(logging.WARNING):
        for token in hostile:
            response = await stack.get("/fhir/Communication", headers={"Authorization": f"Bearer {token}"})
            assert response.status == 401, token
            assert (await response.json())["issue"][0]["code"] == "login"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LHCIE_")}
    return subprocess.run(
        [sys.executable, "-m", "lhcie.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **env},
    )


SERVE_ENV = {
    "LHCIE_JWKS_URL": "https://idp.example/jwks",
    "LHCIE_JWT_ISSUER": ISSUER,
    "LHCIE_JWT_AUDIENCE": AUDIENCE,
    "LHCIE_AMQP_URL": "amqp://lhcie:secret@127.0.0.1:1/lhcie",
    "LHCIE_S3_BUCKET": "documents",
}


@pytest.mark.parametrize(
    ("unset", "named"),
    [
        ("LHCIE_JWKS_URL", "LHCIE_JWKS_URL"),
        ("LHCIE_JWT_ISSUER", "LHCIE_JWT_ISSUER"),
        ("LHCIE_JWT_AUDIENCE", "LHCIE_JWT_AUDIENCE"),
        ("LHCIE_AMQP_URL", "LHCIE_AMQP_URL"),
        ("LHCIE_S3_BUCKET", "LHCIE_S3_BUCKET"),
    ],
)
def test_serve_refuses_to_start_without_a_setting_that_has_no_safe_default(
    tmp_path: Path, unset: str, named: str
) -> None:
    env = {k: v for k, v in SERVE_ENV.items() if k != unset}
    done = serve({**env, "LHCIE_DATA_DIR": str(tmp_path)}, "serve", "intake")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("lhcie serve: refusing to start: ") and named in line


def test_serve_refuses_an_amqp_url_without_credentials(tmp_path: Path) -> None:
    done = serve(
        {**SERVE_ENV, "LHCIE_AMQP_URL": "amqp://127.0.0.1:1/", "LHCIE_DATA_DIR": str(tmp_path)}, "serve", "intake"
    )
    assert done.returncode == 2 and "LHCIE_AMQP_URL has no credentials" in done.stderr


def test_the_embedded_issuer_serves_only_when_enabled_and_says_so(tmp_path: Path) -> None:
    env = {k: v for k, v in SERVE_ENV.items() if k != "LHCIE_JWKS_URL"}
    env.update(
        {
            "LHCIE_DATA_DIR": str(tmp_path),
            "LHCIE_EMBEDDED_ISSUER": "true",
            "LHCIE_BUS": "memory",
            "LHCIE_OBJECT_STORE": "fs",
            "LHCIE_HTTP_PORT": "0",
        }
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LHCIE_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.audit"],
        cwd=ROOT,
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if "auth.embedded_issuer" in line:
                assert "WARNING" in line or '"warning"' in line.lower()
                break
            assert line or proc.poll() is None, "the service stopped without the warning"
        else:
            pytest.fail("no warning about the embedded issuer")
    finally:
        proc.terminate()
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()


def test_lhcie_token_mints_within_the_maximum_lifetime(tmp_path: Path) -> None:
    from shared.auth import EmbeddedIssuer

    # The running exchange's key: `lhcie token` never makes one of its own (issue 19).
    EmbeddedIssuer(tmp_path, issuer="lhcie-embedded", audience="lhcie")
    env = {"LHCIE_DATA_DIR": str(tmp_path)}
    assert serve(env, "token", "--org", "RJ1", "--role", "system", "--ttl", str(24 * 3600)).returncode == 0
    refused = serve(env, "token", "--org", "RJ1", "--role", "system", "--ttl", str(24 * 3600 + 1))
    assert refused.returncode == 2 and "LHCIE_JWT_MAX_LIFETIME_SECONDS" in refused.stderr
    assert (
        serve(
            {**env, "LHCIE_JWT_MAX_LIFETIME_SECONDS": "600"},
            "token",
            "--org",
            "RJ1",
            "--role",
            "system",
            "--ttl",
            "601",
        ).returncode
        == 2
    )


@pytest.fixture
def loose_umask() -> Any:
    old = os.umask(0o022)  # what most shells give: without care, files would be world-readable
    yield
    os.umask(old)


async def test_data_directory_and_its_files_are_private(loose_umask: None, tmp_path: Path) -> None:
    from lhcie.services import SPECS
    from shared.edge import build_app
    from tests.conftest import Tokens, make_settings

    settings = make_settings(tmp_path / "fresh" / "data")
    async with TestClient(TestServer(build_app(settings, list(SPECS.values())))) as stack:
        tokens = Tokens(settings)
        doc_id = await post_document(stack, tokens)
        await eventually(lambda: stored(stack, tokens, doc_id))
        files, dirs = [], []
        for dirpath, dirnames, filenames in os.walk(settings.data_dir):
            dirs += [Path(dirpath, d) for d in dirnames]
            files += [Path(dirpath, f) for f in filenames]
        assert any(f.suffix == ".sqlite3" for f in files) and any(f.name.endswith("-wal") for f in files)
        assert any("objects" in f.parts for f in files) and any(f.name == "signing-key.pem" for f in files)
        modes = {str(p.relative_to(settings.data_dir)): stat.S_IMODE(p.stat().st_mode) for p in files + dirs}
        assert stat.S_IMODE(settings.data_dir.stat().st_mode) == 0o700
        assert {p: m for p, m in modes.items() if m & 0o077} == {}
