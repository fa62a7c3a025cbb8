"""Notification's domain stays free of HTTP and of the broker: only app.py, routes.py and the rest-hook
client adapter (webhook_http.py) may load aiohttp, and nothing of notification's loads aio-pika. Its
settings are read when the app is built, never by the domain."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import services.notification
from services.notification.app import create_app
from services.notification.routes import NOTIFICATION
from services.notification.settings import NotificationSettings
from shared.config import Settings

EDGE = {"app", "routes", "webhook_http", "__main__"}
DOMAIN = sorted(m.name for m in pkgutil.iter_modules(services.notification.__path__) if m.name not in EDGE)


def test_the_domain_modules_are_all_checked() -> None:
    assert {"domain", "delivery", "live", "alerting", "documents", "subscribers"} <= set(DOMAIN)


def test_no_domain_module_loads_aiohttp_or_aio_pika() -> None:
    # A fresh interpreter (this one has loaded aiohttp already); the first module after whose import either
    # is loaded is the one that reaches it, directly or through another.
    probe = "\n".join(
        [
            "import importlib, sys",
            f"for name in {DOMAIN!r}:",
            "    importlib.import_module('services.notification.' + name)",
            "    loaded = [k for k in ('aiohttp', 'aio_pika') if k in sys.modules]",
            "    if loaded:",
            "        print(name, 'loads', *loaded)",
            "        break",
        ]
    )
    found = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
        timeout=60,
    ).stdout.strip()
    assert found == ""


def test_settings_given_to_the_app_factory_are_the_ones_the_service_uses(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LHCIE_NOTIFICATION_STREAM_TOKEN_SECONDS", "1")  # invalid: reading it fails the start
    own = NotificationSettings(stream_token_seconds=600, reconcile_interval_seconds=5)
    notification = create_app(settings, notification=own)[NOTIFICATION]
    assert notification.settings is own
    assert notification.deliverer.settings is own and notification.subscribers.settings is own
    with pytest.raises(ValidationError):
        create_app(settings)  # not given: read from the environment, once, as the app is built
