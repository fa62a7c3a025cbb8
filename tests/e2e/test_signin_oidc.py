"""Sign-in against a real, certified OpenID provider (panva/oidc-provider, started here by Node on a
loopback port) in headless Chromium: the coordinator signs in on the provider's own pages, the console
names them, their acknowledgement carries their name, the session renews silently, and the page says
plainly when the provider can no longer renew it; and the client authenticates with private_key_jwt (NHS
login's only method) when given a private key, refused by the provider when the key is not the one it
registered."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc.jwk import RSAKey
from playwright.async_api import Browser, Page, expect

from lhcie.runner import build
from lhcie.services import SPECS
from shared.config import Settings
from tests.e2e.embedded import SCREENSHOTS, Exchange, browser, post_document  # noqa: F401
from tests.helpers import free_port

pytestmark = pytest.mark.e2e
PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc"


@dataclass
class Provider:
    issuer: str
    process: asyncio.subprocess.Process


async def start_provider(
    port: int, redirect_uri: str, secret: str, access_seconds: int, jwks: Path | None = None
) -> Provider:
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        pytest.fail("the test OpenID provider is not installed: run `make oidc-provider` (npm ci in tests/oidc)")
    node = shutil.which("node")
    assert node, "Node.js is needed for the test OpenID provider"
    process = await asyncio.create_subprocess_exec(
        node,
        str(PROVIDER_DIR / "provider.mjs"),
        str(port),
        redirect_uri,
        secret,
        str(access_seconds),
        *([str(jwks)] if jwks else []),
        cwd=PROVIDER_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
    assert line.decode().startswith("ready "), line
    return Provider(line.decode().split()[1], process)


@pytest.fixture
async def exchange_with_provider(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[str, Provider]]:
    exchange, provider_port = Exchange(lambda: build(settings, list(SPECS))), free_port()
    url = exchange.url
    secret = tmp_path / "client-secret"
    secret.write_text("s3cret-for-tests\n")
    os.chmod(secret, 0o600)
    # The provider's access token outlives the renewal margin by 5 s, and the exchange token lives 10 s:
    # the page renews every few seconds and every renewal goes to the provider with the refresh token.
    provider = await start_provider(provider_port, f"{url}/signin/callback", "s3cret-for-tests", 125)
    for name, value in {
        "ISSUER": provider.issuer,
        "CLIENT_ID": "lhcie-console",
        "CLIENT_SECRET_FILE": str(secret),
        "SCOPES": "openid profile lhcie offline_access",
        "TOKEN_TTL_SECONDS": "10",
    }.items():
        monkeypatch.setenv(f"LHCIE_OIDC_{name}", value)
    await exchange.start()
    try:
        yield url, provider
    finally:
        await exchange.stop()
        if provider.process.returncode is None:
            provider.process.terminate()
            await provider.process.wait()


async def test_a_coordinator_signs_in_at_a_certified_provider_and_is_named(
    exchange_with_provider: tuple[str, Provider], browser: Browser, tokens: Any
) -> None:
    url, provider = exchange_with_provider
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    await sign_in_at_provider(page, url, provider)
    await page.wait_for_selector("#live:text('Live')")
    assert (await page.locator("#who").text_content() or "").startswith("Dr A. Smith · RJ1 · ")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "console-signed-in.png"), full_page=True)

    await post_document(url, tokens("RJ1"))
    await page.locator("#alerts tr").first.wait_for(timeout=15000)
    await page.get_by_role("button", name="Acknowledge").first.click()
    await page.select_option("#f-status", "")
    await page.wait_for_selector("#alerts tr td.state:text-matches('^Acknowledged by Dr A. Smith, ')")

    # Silent renewal: the page fetches new tokens (through the provider's refresh) and stays live.
    await expect(page.locator("body")).to_have_attribute("data-renewals", re.compile(r"^([2-9]|\d\d+)$"), timeout=30000)
    assert await page.locator("#session-ended").is_hidden()
    assert await page.locator("#live").text_content() == "Live"

    provider.process.terminate()  # the provider is gone: the next renewal cannot happen
    await provider.process.wait()
    banner = page.locator("#session-ended")
    await banner.wait_for(state="visible", timeout=30000)
    assert (await banner.text_content() or "").startswith("Your sign-in could not be renewed")
    assert await banner.get_by_role("link", name="Sign in again").get_attribute("href") == "/signin?next=%2Fconsole%2F"
    await page.screenshot(path=str(SCREENSHOTS / "console-session-ended.png"), full_page=True)


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture(params=["registered-key", "another-key"])
async def exchange_with_key_provider(
    request: pytest.FixtureRequest, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[tuple[str, Provider, str]]:
    """The provider knows the client by the public half of a key (its JWKS), as NHS login does; the
    exchange signs with that key, or with another one."""
    exchange, provider_port = Exchange(lambda: build(settings, list(SPECS))), free_port()
    url = exchange.url
    registered = rsa_pem()
    public = RSAKey.import_key(registered).as_dict(private=False)
    (tmp_path / "jwks.json").write_text(
        json.dumps({"keys": [{**public, "kid": "lhcie-1", "use": "sig", "alg": "RS512"}]})
    )
    key_file = tmp_path / "client-key.pem"
    key_file.write_bytes(registered if request.param == "registered-key" else rsa_pem())
    os.chmod(key_file, 0o600)
    provider = await start_provider(provider_port, f"{url}/signin/callback", "unused", 125, jwks=tmp_path / "jwks.json")
    for name, value in {
        "ISSUER": provider.issuer,
        "CLIENT_ID": "lhcie-console",
        "CLIENT_KEY_FILE": str(key_file),
        "CLIENT_KEY_ID": "lhcie-1",
        "SCOPES": "openid profile lhcie offline_access",
        "TOKEN_TTL_SECONDS": "10",
    }.items():
        monkeypatch.setenv(f"LHCIE_OIDC_{name}", value)
    await exchange.start()
    try:
        yield url, provider, request.param
    finally:
        await exchange.stop()
        if provider.process.returncode is None:
            provider.process.terminate()
            await provider.process.wait()


async def sign_in_at_provider(page: Page, url: str, provider: Provider) -> None:
    await page.goto(f"{url}/console/")
    await page.get_by_role("link", name="Sign in").click()
    # The provider's own login and consent pages (oidc-provider's development interactions).
    await page.wait_for_url(f"{provider.issuer}/**")
    await page.fill("input[name=login]", "smith-a")
    await page.fill("input[name=password]", "any")
    await page.click("button[type=submit]")
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url(f"{url}/console/**")


async def test_the_client_authenticates_with_private_key_jwt(
    exchange_with_key_provider: tuple[str, Provider, str], browser: Browser
) -> None:
    url, provider, key = exchange_with_key_provider
    page = await browser.new_page(viewport={"width": 1280, "height": 720})
    await sign_in_at_provider(page, url, provider)
    if key == "another-key":
        # The provider accepts only an assertion signed with the registered key: no session.
        await expect(page.locator("#signin-message")).to_contain_text("the provider refused the sign-in")
        assert await page.locator("#tabs").is_hidden()
        return
    await page.wait_for_selector("#live:text('Live')")
    assert (await page.locator("#who").text_content() or "").startswith("Dr A. Smith · RJ1 · ")
    # Each renewal is another token request, with a fresh assertion (oidc-provider refuses a replayed jti).
    await expect(page.locator("body")).to_have_attribute("data-renewals", re.compile(r"^([2-9]|\d\d+)$"), timeout=30000)
    assert await page.locator("#session-ended").is_hidden()
