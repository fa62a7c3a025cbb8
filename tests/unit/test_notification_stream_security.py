"""The SSE stream's limits (issue 14): it ends when its token does, streams are capped per person and per
MDT, and the token-signing key sits in its own 0600 file, rotatable, never in the service's database."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError

from lhcie.services import SPECS
from services.notification import stream_tokens
from services.notification.routes import STREAM_TOKENS
from services.notification.settings import NotificationSettings
from shared.config import Settings
from shared.edge import build_app
from tests.helpers import eventually
from tests.unit.test_notification_alerts import teams_known

COORDINATOR = {"org": "RJ1", "role": "mdt-coordinator", "mdt": "rj1-lung"}


async def test_the_stream_ends_when_its_token_expires(stack: TestClient) -> None:
    await teams_known(stack)
    token, _ = stack.server.app[STREAM_TOKENS].issue(
        mdt="rj1-lung", subject="mdt-coordinator@RJ1", org="RJ1", role="mdt-coordinator", ttl=4
    )
    stream = await stack.get(f"/alerts/stream?token={token}")
    assert stream.status == 200
    async with asyncio.timeout(30):  # it used to stream on for ever
        body = await stream.read()
    assert body.endswith(b"event: expired\ndata: {}\n\n")


class ServedServer(TestServer):
    """Served as `lhcie serve` serves (shared/process.py): aiohttp's default of not cancelling a handler
    whose client has left, which TestServer turns on. A stream must notice on its own."""

    async def _make_runner(self, **kwargs: Any) -> web.BaseRunner:
        return await super()._make_runner(**{**kwargs, "handler_cancellation": False})


@pytest.fixture
async def capped(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("LHCIE_NOTIFICATION_STREAM_MAX_PER_SUBJECT", "1")
    monkeypatch.setenv("LHCIE_NOTIFICATION_STREAM_MAX_PER_MDT", "2")
    async with TestClient(ServedServer(build_app(settings, list(SPECS.values())))) as client:
        yield client


async def test_streams_are_capped_per_person_and_per_mdt(capped: TestClient) -> None:
    await teams_known(capped)
    issue = capped.server.app[STREAM_TOKENS].issue

    def token(subject: str) -> str:
        return issue(mdt="rj1-lung", subject=subject, org="RJ1", role="mdt-coordinator", ttl=60)[0]

    first = await capped.get(f"/alerts/stream?token={token('a@RJ1')}")
    assert first.status == 200
    same_person = await capped.get(f"/alerts/stream?token={token('a@RJ1')}")
    assert same_person.status == 429
    assert same_person.headers["Retry-After"]
    assert (await same_person.json())["issue"][0]["code"] == "throttled"
    second = await capped.get(f"/alerts/stream?token={token('b@RJ1')}")
    assert second.status == 200
    third_in_mdt = await capped.get(f"/alerts/stream?token={token('c@RJ1')}")
    assert third_in_mdt.status == 429
    first.close()

    async def slot_free() -> bool:
        response = await capped.get(f"/alerts/stream?token={token('a@RJ1')}")
        if response.status == 200:
            response.close()
            return True
        return False

    # A closed stream gives its place back at its next poll (1 s), not at its next heartbeat (15 s).
    assert await eventually(slot_free, timeout=10)
    second.close()


async def test_the_signing_key_is_a_0600_file_not_a_database_row_and_rotates(
    stack: TestClient, settings: Settings
) -> None:
    path = settings.data_dir / "notification" / "stream-token.keys"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(settings.service_db_path("notification")) as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
        if "secrets" in tables:
            assert db.execute("select count(*) from secrets").fetchone()[0] == 0
    tokens = stack.server.app[STREAM_TOKENS]
    before, _ = tokens.issue(mdt="rj1-lung", subject="a@RJ1", org="RJ1", role="mdt-coordinator", ttl=60)
    stream_tokens.rotate(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert tokens.verify(before).subject == "a@RJ1"  # the previous key still verifies during the rotation
    after, _ = tokens.issue(mdt="rj1-lung", subject="b@RJ1", org="RJ1", role="mdt-coordinator", ttl=60)
    assert tokens.verify(after).subject == "b@RJ1"
    stream_tokens.rotate(path)
    with pytest.raises(stream_tokens.BadStreamToken):
        tokens.verify(before)  # two rotations on, the first key is gone
    assert tokens.verify(after).subject == "b@RJ1"


async def test_stream_tokens_have_a_short_bounded_lifetime(stack: TestClient, settings: Settings) -> None:
    with pytest.raises(ValidationError):
        NotificationSettings(stream_token_seconds=3600)
    tokens = stack.server.app[STREAM_TOKENS]
    _, expires = tokens.issue(mdt="rj1-lung", subject="a@RJ1", org="RJ1", role="mdt-coordinator", ttl=10 * 365 * 86400)
    assert expires - time.time() <= stream_tokens.MAX_LIFETIME_SECONDS
    # Even signed with the real key, a ten-year token is refused.
    key = bytes.fromhex((settings.data_dir / "notification" / "stream-token.keys").read_text().split()[0])
    now = int(time.time())
    body = (
        base64.urlsafe_b64encode(
            json.dumps(
                {
                    "mdt": "rj1-lung",
                    "sub": "a@RJ1",
                    "org": "RJ1",
                    "role": "mdt-coordinator",
                    "iat": now,
                    "exp": now + 10 * 365 * 86400,
                }
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    forged = f"{body}.{stream_tokens._sign(key, body)}"
    response = await stack.get(f"/alerts/stream?token={forged}")
    assert response.status == 401


async def test_replicas_on_a_shared_store_without_a_key_file_accept_each_others_tokens(tmp_path: Path) -> None:
    from shared.store.sqlite import SqliteStore

    store = SqliteStore(tmp_path / "shared.sqlite3")
    collection = store.collection("secrets")
    await store.start()
    try:
        one, two = (stream_tokens.StreamTokens(tmp_path / name / "keys", shared=collection) for name in ("a", "b"))
        await one.start()
        await two.start()
        token, _ = one.issue(mdt="rj1-lung", subject="a@RJ1", org="RJ1", role="mdt-coordinator", ttl=60)
        assert two.verify(token).subject == "a@RJ1"
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    finally:
        await store.close()
