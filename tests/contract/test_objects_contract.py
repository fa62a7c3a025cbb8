"""One contract for the object-store port, run against both adapters: the filesystem and S3 (moto)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.storage.bucket import prepare
from shared.objects import ObjectInfo, ObjectNotFound, ObjectStore, one_chunk, open_object_store
from shared.objects.fs import FileObjectStore
from tests.s3server import MotoServer, s3_credentials, s3_server, s3_settings_for  # noqa: F401

MiB = 1024 * 1024
# Larger than one S3 part (5 MiB), so the S3 adapter goes through its multipart path.
LARGE = os.urandom(11 * MiB + 123)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def chunked(data: bytes, size: int = MiB) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def failing_after(data: bytes) -> AsyncIterator[bytes]:
    async for chunk in chunked(data):
        yield chunk
    raise OSError("the sender went away")


@pytest.fixture(params=["fs", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "fs":
        adapter: ObjectStore = FileObjectStore(tmp_path / "objects")
    else:
        server: MotoServer = request.getfixturevalue("s3_server")
        settings = s3_settings_for(tmp_path / "data", server.url, s3_part_size=5 * MiB)
        assert all(c.status != "failed" for c in await prepare(settings))
        adapter = open_object_store(settings)
    await adapter.start()
    yield adapter
    await adapter.close()


async def test_put_returns_size_and_digest_and_the_bytes_read_back(store: ObjectStore) -> None:
    info = await store.put("documents/RJ1/a", one_chunk(b"hello world"), content_type="text/plain")

    assert info == ObjectInfo("documents/RJ1/a", 11, sha(b"hello world"), "text/plain")
    assert await store.head("documents/RJ1/a") == info
    assert await store.read_all("documents/RJ1/a") == b"hello world"


async def test_large_object_streams_in_and_out_intact(store: ObjectStore) -> None:
    info = await store.put("documents/RJ1/large", chunked(LARGE), content_type="application/pdf")

    assert info == ObjectInfo("documents/RJ1/large", len(LARGE), sha(LARGE), "application/pdf")
    assert await store.head("documents/RJ1/large") == info
    assert sha(await store.read_all("documents/RJ1/large")) == sha(LARGE)


async def test_byte_ranges(store: ObjectStore) -> None:
    await store.put("k/range", one_chunk(b"0123456789"), content_type="text/plain")

    async def read(start: int, end: int | None) -> bytes:
        return b"".join([c async for c in store.get("k/range", start=start, end=end)])

    assert await read(2, 5) == b"234"
    assert await read(7, None) == b"789"
    assert await read(8, 100) == b"89"
    assert await read(4, 4) == b""
    assert await read(10, None) == b""


async def test_a_write_that_fails_half_way_leaves_nothing(store: ObjectStore) -> None:
    with pytest.raises(OSError):
        await store.put("staging/broken", failing_after(LARGE[: 6 * MiB]), content_type="application/pdf")

    assert await store.head("staging/broken") is None
    assert [k async for k in store.list("staging/")] == []


async def test_overwrite_replaces_the_whole_object(store: ObjectStore) -> None:
    await store.put("k/over", one_chunk(b"first version, longer"), content_type="text/plain")
    await store.put("k/over", one_chunk(b"second"), content_type="text/csv")

    assert await store.read_all("k/over") == b"second"
    assert await store.head("k/over") == ObjectInfo("k/over", 6, sha(b"second"), "text/csv")


async def test_missing_keys(store: ObjectStore) -> None:
    assert await store.head("k/none") is None
    with pytest.raises(ObjectNotFound):
        await store.read_all("k/none")
    with pytest.raises(ObjectNotFound):
        await store.copy("k/none", "k/other")
    await store.delete("k/none")  # not an error


async def test_copy_delete_and_list(store: ObjectStore) -> None:
    source = await store.put("staging/s1", one_chunk(b"%PDF-1.4 body"), content_type="application/pdf")
    copied = await store.copy("staging/s1", "documents/RJ1/d1")
    await store.put("documents/RRV/d2", one_chunk(b"{}"), content_type="application/json")

    assert copied == ObjectInfo("documents/RJ1/d1", source.size, source.sha256, "application/pdf")
    assert await store.read_all("documents/RJ1/d1") == b"%PDF-1.4 body"
    assert [k async for k in store.list("documents/")] == ["documents/RJ1/d1", "documents/RRV/d2"]

    await store.delete("staging/s1")
    assert await store.head("staging/s1") is None
    assert [k async for k in store.list("staging/")] == []
    assert [k async for k in store.list("")] == ["documents/RJ1/d1", "documents/RRV/d2"]


async def test_is_healthy(store: ObjectStore) -> None:
    assert await store.is_healthy() is True
