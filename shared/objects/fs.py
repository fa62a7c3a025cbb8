"""Object store on the local filesystem: the embedded run's bucket under the data directory."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path

from shared.objects.base import CHUNK, HashingReader, ObjectInfo, ObjectNotFound, ObjectStore

_META = ".meta.json"


class FileObjectStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self._root = root

    async def start(self) -> None:
        self._root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.endswith(_META):
            raise ValueError("invalid object key")
        return self._root.joinpath(*parts)

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> ObjectInfo:
        path = self._path(key)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        reader = HashingReader(chunks)
        handle = await asyncio.to_thread(open, tmp, "wb")
        try:
            async for chunk in reader:
                await asyncio.to_thread(handle.write, chunk)
            await asyncio.to_thread(_flush, handle)
        except BaseException:
            handle.close()
            tmp.unlink(missing_ok=True)
            raise
        handle.close()
        info = ObjectInfo(key, reader.size, reader.sha256, content_type)
        await asyncio.to_thread(_commit, tmp, path, info)
        return info

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle = await asyncio.to_thread(open, path, "rb")
        except FileNotFoundError:
            raise ObjectNotFound(key) from None
        try:
            await asyncio.to_thread(handle.seek, start)
            remaining = None if end is None else max(end - start, 0)
            while remaining is None or remaining > 0:
                size = CHUNK if remaining is None else min(CHUNK, remaining)
                chunk = await asyncio.to_thread(handle.read, size)
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk
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
        path = self._path(key)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        await asyncio.to_thread(path.with_name(path.name + _META).unlink, missing_ok=True)

    async def list(self, prefix: str) -> AsyncIterator[str]:
        keys = await asyncio.to_thread(self._keys)
        for key in keys:
            if key.startswith(prefix):
                yield key

    def _keys(self) -> list[str]:
        found = []
        for dirpath, _, files in os.walk(self._root):
            for name in files:
                if name.endswith(_META) or name.endswith(".part"):
                    continue
                found.append(Path(dirpath, name).relative_to(self._root).as_posix())
        return sorted(found)

    async def is_healthy(self) -> bool:
        return await asyncio.to_thread(os.access, self._root, os.W_OK)


def _flush(handle: object) -> None:
    handle.flush()  # type: ignore[attr-defined]
    os.fsync(handle.fileno())  # type: ignore[attr-defined]


def _commit(tmp: Path, path: Path, info: ObjectInfo) -> None:
    """Make the object visible atomically: metadata first, then the bytes by rename, then the dir."""
    meta = path.with_name(path.name + _META)
    meta_tmp = meta.with_name(f".{meta.name}.{uuid.uuid4().hex}.part")
    meta_tmp.write_text(json.dumps(info.__dict__))
    os.replace(meta_tmp, meta)
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
