"""What the people's page tests share: the embedded exchange with sign-in and its development provider
on a loopback port, and signing a demo person in through the provider's page. The browser and where
the screenshots go are every browser test's (tests/e2e/embedded.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from lhcie.runner import build
from lhcie.services import SPECS
from shared.config import Settings
from tests.e2e.embedded import Exchange, serving


@pytest.fixture
async def exchange(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The embedded run (the services, sign-in and the development provider) at a loopback URL. The
    exchange token lives 10 s, so a page renews its session every few seconds while a test runs."""
    monkeypatch.delenv("LHCIE_OIDC_ISSUER", raising=False)
    monkeypatch.setenv("LHCIE_OIDC_TOKEN_TTL_SECONDS", "10")
    async with serving(Exchange(lambda: build(settings, list(SPECS)))) as served:
        yield served.url


async def new_page(browser: Browser, *, width: int = 1280) -> Page:
    context = await browser.new_context(viewport={"width": width, "height": 900}, accept_downloads=True)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors  # type: ignore[attr-defined]
    return page


async def sign_in(page: Page, url: str, path: str, person: str) -> None:
    """Open ``path``, follow its Sign in link to the development provider, choose ``person`` (a demo
    subject), and come back signed in."""
    await page.goto(f"{url}{path}")
    await page.get_by_role("link", name="Sign in").click()
    await page.wait_for_url(f"{url}/dev-oidc/authorize**")
    await page.click(f"button[name=person][value='{person}']")
    await page.wait_for_url(f"{url}{path}")
    await page.locator("#app").wait_for(state="visible")


def errors(page: Any) -> list[str]:
    return list(page.errors)
