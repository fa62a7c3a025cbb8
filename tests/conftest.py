"""Fixtures shared by every suite: settings on a temporary data directory, the embedded stack as an
aiohttp test client, tokens, and an isolated RabbitMQ virtual host on the real broker."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lhcie.services import SPECS
from shared.auth import EmbeddedIssuer
from shared.config import BusKind, ObjectStoreKind, Settings
from shared.edge import build_app
from tests.helpers import rabbitmqctl

RABBITMQ_HOST = "127.0.0.1:5672"


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "bus": BusKind.SQLITE,
        "object_store": ObjectStoreKind.FS,
        "demo": True,
        "embedded_issuer": True,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


class Tokens:
    """Mints tokens from the embedded issuer of a data directory, as ``lhcie token`` does."""

    def __init__(self, settings: Settings) -> None:
        self.issuer = EmbeddedIssuer(settings.data_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience)

    def __call__(self, org: str = "RJ1", role: str = "system", **kw: Any) -> str:
        return self.issuer.mint(org=org, role=role, **kw)

    def headers(self, org: str = "RJ1", role: str = "system", **kw: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self(org, role, **kw)}"}


@pytest.fixture
def tokens(settings: Settings) -> Tokens:
    return Tokens(settings)


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[TestClient]:
    """All five services in one app on the embedded adapters (what ``lhcie run`` serves)."""
    app = build_app(settings, list(SPECS.values()))
    async with TestClient(TestServer(app)) as client:
        yield client


class VirtualHosts:
    """Private RabbitMQ virtual hosts on the real broker, deleted afterwards: tests never share queues."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def __call__(self) -> str:
        name = f"lhcie-test-{uuid.uuid4().hex[:12]}"
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        self.made.append(name)
        return f"amqp://guest:guest@{RABBITMQ_HOST}/{name}"

    def delete_all(self) -> None:
        for name in self.made:
            try:
                rabbitmqctl("delete_vhost", name)
            except subprocess.SubprocessError:
                pass


@pytest.fixture
def vhost_factory() -> Iterator[Callable[[], str]]:
    vhosts = VirtualHosts()
    yield vhosts
    vhosts.delete_all()


@pytest.fixture
def amqp_url(vhost_factory: Callable[[], str]) -> str:
    return vhost_factory()


@pytest.fixture(scope="session")
def session_amqp_url() -> Iterator[str]:
    """One private vhost for a whole run, for tests whose queue names are unique anyway."""
    vhosts = VirtualHosts()
    yield vhosts()
    vhosts.delete_all()
