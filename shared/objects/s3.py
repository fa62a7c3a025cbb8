"""Object store on an S3 API (AWS S3, MinIO, moto) through aiobotocore.

aiobotocore rather than boto3 in threads: measured against moto on this machine the throughput is the
same (the server is the bottleneck), but native coroutines can be cancelled (a request timeout or a
SIGTERM drain does not leave a thread blocked on a socket), do not compete for the default thread pool
that the filesystem and SQLite adapters use, and aiobotocore is already the runtime dependency.

Every write asks for server-side encryption. Objects above one part go up as a multipart upload that is
aborted on any failure, so, as S3 makes an object visible only when its upload completes, nothing
half-written is ever readable. Connection errors, timeouts and 5xx answers become
``ObjectStoreUnavailable`` after botocore's few bounded retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from shared.config import Settings
from shared.objects.base import CHUNK, HashingReader, ObjectInfo, ObjectNotFound, ObjectStore, ObjectStoreUnavailable

log = logging.getLogger(__name__)

# S3 copies up to 5 GiB in one request; larger objects are copied by streaming them through.
COPY_LIMIT = 5 * 1024**3
SHA256 = "sha256"
_MISSING = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT = {"SlowDown", "ServiceUnavailable", "RequestTimeout", "InternalError", "NoSuchBucket"}


@contextlib.contextmanager
def translated(key: str) -> Iterator[None]:
    """S3 and transport errors as the port's: missing key, or store unavailable."""
    try:
        yield
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _MISSING:
            raise ObjectNotFound(key) from None
        if status >= 500 or code in _TRANSIENT:
            raise ObjectStoreUnavailable(code or str(status)) from exc
        raise
    except (BotoConnectionError, HTTPClientError, aiohttp.ClientError, TimeoutError) as exc:
        raise ObjectStoreUnavailable(type(exc).__name__) from exc


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _without_expect_continue(params: dict[str, Any], **_: Any) -> None:
    # botocore asks for "Expect: 100-continue" on uploads, and aiohttp waits for the "100" with no
    # timeout: a server that accepts the connection but stalls would hang the upload for ever instead of
    # timing out. Parts are bounded (s3_part_size), so sending the body at once costs little.
    params.get("headers", {}).pop("Expect", None)


class S3ObjectStore(ObjectStore):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.bucket = settings.s3_bucket
        self._part_size = settings.s3_part_size
        self._config = AioConfig(
            connect_timeout=settings.s3_connect_timeout,
            read_timeout=settings.s3_read_timeout,
            retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
            s3={"addressing_style": "path" if settings.s3_path_style else "auto"},
            signature_version="s3v4",
            max_pool_connections=32,
        )
        self._sse: dict[str, str] = {"ServerSideEncryption": settings.s3_sse}
        if settings.s3_sse == "aws:kms" and settings.s3_kms_key_id:
            self._sse["SSEKMSKeyId"] = settings.s3_kms_key_id
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._lock_enabled: bool | None = None

    @property
    def client(self) -> Any:
        """The aiobotocore S3 client (for bucket set-up); ``start`` opens it."""
        if self._client is None:
            raise RuntimeError("S3ObjectStore.start() has not been called")
        return self._client

    async def start(self) -> None:
        # Opening the client does no network I/O: the process starts even while S3 is down, and
        # /readyz reports the store until it answers.
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self.settings.s3_endpoint_url,
                region_name=self.settings.s3_region,
                config=self._config,
            )
        )
        self._client.meta.events.register_last("before-call.s3", _without_expect_continue)

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str) -> ObjectInfo:
        reader = HashingReader(chunks)
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            with translated(key):
                async for chunk in reader:
                    buffer.extend(chunk)
                    while len(buffer) >= self._part_size:
                        if upload_id is None:
                            upload_id = await self._begin_multipart(key, content_type)
                        part = bytes(buffer[: self._part_size])
                        del buffer[: self._part_size]
                        parts.append(await self._upload_part(key, upload_id, len(parts) + 1, part))
                if upload_id is None:
                    await self.client.put_object(
                        Bucket=self.bucket,
                        Key=key,
                        Body=bytes(buffer),
                        ContentType=content_type,
                        Metadata={SHA256: reader.sha256},
                        **self._sse,
                    )
                else:
                    if buffer:
                        parts.append(await self._upload_part(key, upload_id, len(parts) + 1, bytes(buffer)))
                    await self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )
                    upload_id = None
                    # The digest is known only once every part has gone: it is recorded as a tag, which
                    # (unlike metadata) can be set on the finished object without copying it.
                    await self.client.put_object_tagging(
                        Bucket=self.bucket,
                        Key=key,
                        Tagging={"TagSet": [{"Key": SHA256, "Value": reader.sha256}]},
                    )
        except BaseException:
            if upload_id is not None:
                await asyncio.shield(self._abort(key, upload_id))
            raise
        return ObjectInfo(key, reader.size, reader.sha256, content_type)

    async def _begin_multipart(self, key: str, content_type: str) -> str:
        created = await self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type, **self._sse
        )
        return str(created["UploadId"])

    async def _upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        uploaded = await self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
        )
        return {"PartNumber": number, "ETag": uploaded["ETag"]}

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:
            # The lifecycle rule aborts incomplete uploads; parts are never visible as an object.
            log.warning("objects.abort_failed", extra={"code": "OBJ001"})

    async def get(self, key: str, *, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if end is not None and end <= start:
            if await self.head(key) is None:
                raise ObjectNotFound(key)
            return
        if start or end is not None:
            params["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with translated(key):
            try:
                response = await self.client.get_object(**params)
            except ClientError as exc:
                if error_code(exc) == "InvalidRange":
                    return  # starts past the end: nothing to read, as a file would give
                raise
            body = response["Body"]
            try:
                async for chunk in body.iter_chunks(CHUNK):
                    yield chunk
            finally:
                body.close()

    async def head(self, key: str) -> ObjectInfo | None:
        try:
            with translated(key):
                found = await self.client.head_object(Bucket=self.bucket, Key=key)
                sha256 = found.get("Metadata", {}).get(SHA256)
                if sha256 is None:
                    tags = await self.client.get_object_tagging(Bucket=self.bucket, Key=key)
                    sha256 = next((t["Value"] for t in tags.get("TagSet", []) if t["Key"] == SHA256), "")
        except ObjectNotFound:
            return None
        return ObjectInfo(key, int(found["ContentLength"]), sha256, found.get("ContentType", ""))

    async def copy(self, source: str, target: str) -> ObjectInfo:
        info = await self.head(source)
        if info is None:
            raise ObjectNotFound(source)
        if info.size > COPY_LIMIT:
            return await self.put(target, self.get(source), content_type=info.content_type)
        with translated(source):
            await self.client.copy_object(
                Bucket=self.bucket,
                Key=target,
                CopySource={"Bucket": self.bucket, "Key": source},
                MetadataDirective="COPY",
                TaggingDirective="COPY",
                **self._sse,
            )
        return ObjectInfo(target, info.size, info.sha256, info.content_type)

    async def delete(self, key: str) -> None:
        with translated(key):
            await self.client.delete_object(Bucket=self.bucket, Key=key)
            # In a versioned bucket the delete only hides the bytes; remove every version so a rejected
            # or staged document really leaves the bucket. Retained versions refuse, as they should.
            listed = await self.client.list_object_versions(Bucket=self.bucket, Prefix=key)
            versions = [
                {"Key": v["Key"], "VersionId": v["VersionId"]}
                for v in [*listed.get("Versions", []), *listed.get("DeleteMarkers", [])]
                if v["Key"] == key and v.get("VersionId") not in (None, "null")
            ]
            if versions:
                result = await self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": versions, "Quiet": True}
                )
                if result.get("Errors"):
                    log.warning("objects.versions_kept count=%d", len(result["Errors"]), extra={"code": "OBJ002"})

    async def list(self, prefix: str) -> AsyncIterator[str]:
        with translated(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield item["Key"]

    async def is_healthy(self) -> bool:
        try:
            await self.client.head_bucket(Bucket=self.bucket)
        except Exception:
            return False
        return True

    async def lock_enabled(self) -> bool:
        """Was the bucket created with object lock? Asked once, then remembered."""
        if self._lock_enabled is None:
            with translated(""):
                try:
                    found = await self.client.get_object_lock_configuration(Bucket=self.bucket)
                    config = found.get("ObjectLockConfiguration", {})
                    self._lock_enabled = config.get("ObjectLockEnabled") == "Enabled"
                except ClientError as exc:
                    if error_code(exc) not in {"ObjectLockConfigurationNotFoundError", "NotImplemented"}:
                        raise
                    self._lock_enabled = False
        return self._lock_enabled

    async def retain(self, key: str, *, until: datetime, mode: str) -> bool:
        if not await self.lock_enabled():
            return False
        with translated(key):
            await self.client.put_object_retention(
                Bucket=self.bucket, Key=key, Retention={"Mode": mode, "RetainUntilDate": until}
            )
        return True

    async def presign(self, key: str, *, ttl: int, content_type: str) -> str | None:
        url = await self.client.generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "ResponseContentType": content_type,
                "ResponseCacheControl": "no-store",
            },
            ExpiresIn=ttl,
        )
        return str(url)
