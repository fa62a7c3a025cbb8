"""Object store on the local filesystem: the embedded run's bucket under the data directory."""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from typing import BinaryIO

from shared.files import open_private, private_dir
from shared.objects.base import CHUNK, HashingReader, ObjectInfo, ObjectNotFound, ObjectStore

_META = ".meta.json"
STAGING_PREFIX = "staging/"
PART_EXPIRY_SECONDS = 86400  # like the bucket's AbortIncompleteMultipartUpload after one day


class FileObjectStore(ObjectStore):
    def __init__(
        self, root: Path, *, staging_expiry_seconds: float | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._root = root
        self._staging_expiry = staging_expiry_seconds
        self._clock = clock

    async def expire_abandoned(self) -> int:
        """What the S3 lifecycle rule does for the bucket: staged objects older than the configured age, and
        half-written uploads older than a day, are deleted (judged by the file's modification time)."""
        if self._staging_expiry is None:
            return 0
        return await asyncio.to_thread(_expire, self._root, self._clock(), self._staging_expiry)

    async def start(self) -> None:
        await asyncio.to_thread(private_dir, self._root, tighten=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.endswith(_META):
            raise ValueError("invalid object key")
        return self._root.joinpath(*parts)

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> ObjectInfo:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        reader = HashingReader(chunks)
        handle: BinaryIO | None = None
        # Few hops to a worker thread: the first chunk opens the file, the last hop fsyncs and commits, so a
        # one-chunk document costs two.
        try:
            async for chunk in reader:
                if handle is None:
                    handle = await asyncio.to_thread(_create, tmp, chunk)
                else:
                    await asyncio.to_thread(handle.write, chunk)
            if handle is None:
                handle = await asyncio.to_thread(_create, tmp, b"")
            info = ObjectInfo(key, reader.size, reader.sha256, content_type)
            await asyncio.to_thread(_finish, handle, tmp, path, info)
        except BaseException:
            if handle is not None:
                handle.close()
            tmp.unlink(missing_ok=True)
            raise
        return info

    async def put_bytes(self, key: str, data: bytes, *, content_type: str) -> ObjectInfo:
        # One hop to a worker thread instead of put()'s two: create, write, fsync and commit together.
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        info = ObjectInfo(key, len(data), hashlib.sha256(data).hexdigest(), content_type)
        await asyncio.to_thread(_write_whole, tmp, path, data, info)
        return info

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        remaining = None if end is None else max(end - start, 0)
        size = CHUNK if remaining is None else min(CHUNK, remaining)
        try:
            handle, chunk = await asyncio.to_thread(_open_at, path, start, size)
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            while chunk:
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
                if (remaining is not None and remaining <= 0) or len(chunk) < size:
                    break  # a short read is the end of the file: no extra hop to learn it
                size = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
        finally:
            handle.close()

    async def head(self, key: str) -> ObjectInfo | None:
        meta = self._path(key).with_name(self._path(key).name + _META)
        try:
            raw = await asyncio.to_thread(meta.read_text)
        except FileNotFoundError:
            return None
        if not self._path(key).exists():
            return None
        return ObjectInfo(**json.loads(raw))

    async def copy(self, source: str, target: str) -> ObjectInfo:
        info = await self.head(source)
        if info is None:
            raise ObjectNotFound(source)
        return await self.put(target, self.get(source), content_type=info.content_type)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(_remove, self._path(key))

    async def list(self, prefix: str) -> AsyncIterator[str]:
        keys = await asyncio.to_thread(self._keys)
        for key in keys:
            if key.startswith(prefix):
                yield key

    def _keys(self) -> builtins.list[str]:  # ``list`` here is the method above
        found = []
        for dirpath, _, files in os.walk(self._root):
            for name in files:
                if name.endswith(_META) or name.endswith(".part"):
                    continue
                found.append(Path(dirpath, name).relative_to(self._root).as_posix())
        return sorted(found)

    async def is_healthy(self) -> bool:
        return await asyncio.to_thread(os.access, self._root, os.W_OK)


def _expire(root: Path, now: float, staging_age: float) -> int:
    removed = 0
    staging = root / STAGING_PREFIX.rstrip("/")
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath, name)
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:
                continue  # deleted meanwhile by its owner
            if name.endswith(".part"):
                if age > PART_EXPIRY_SECONDS:
                    path.unlink(missing_ok=True)
                    removed += 1
            elif not name.endswith(_META) and path.is_relative_to(staging) and age > staging_age:
                _remove(path)
                removed += 1
    return removed


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + _META).unlink(missing_ok=True)


def _create(tmp: Path, first: bytes) -> BinaryIO:
    private_dir(tmp.parent)
    handle = os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb")
    handle.write(first)
    return handle


def _write_whole(tmp: Path, path: Path, data: bytes, info: ObjectInfo) -> None:
    handle = _create(tmp, data)
    try:
        _finish(handle, tmp, path, info)
    except BaseException:
        handle.close()
        tmp.unlink(missing_ok=True)
        raise


def _finish(handle: BinaryIO, tmp: Path, path: Path, info: ObjectInfo) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    _commit(tmp, path, info)


def _open_at(path: Path, start: int, size: int) -> tuple[BinaryIO, bytes]:
    handle = open(path, "rb")  # noqa: SIM115 - closed by get()
    try:
        handle.seek(start)
        return handle, handle.read(size)
    except BaseException:
        handle.close()
        raise


def _commit(tmp: Path, path: Path, info: ObjectInfo) -> None:
    """Make the object visible atomically: metadata first, then the bytes by rename, then the dir."""
    meta = path.with_name(path.name + _META)
    meta_tmp = meta.with_name(f".{meta.name}.{uuid.uuid4().hex}.part")
    with os.fdopen(open_private(meta_tmp), "w") as meta_file:
        meta_file.write(json.dumps(info.__dict__))
    os.replace(meta_tmp, meta)
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
