"""Storage on a real S3 API (moto server): encryption, multipart, retention, retrieval, faults."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from botocore.exceptions import ClientError

from lhcie import cli
from lhcie.services import SPECS
from services.storage.bucket import prepare, report
from services.storage.integrity import verify
from shared.app_keys import RUNTIME
from shared.bus import QueueSpec
from shared.config import Settings
from shared.edge import build_app
from shared.events import Actor, DocumentFacts, DocumentReceived, Event, RoutingKey
from shared.objects import ObjectStore, ObjectStoreUnavailable, one_chunk, open_object_store
from shared.objects.s3 import S3ObjectStore
from tests.conftest import Tokens
from tests.helpers import PDF, TEST_PATIENT, document_reference, eventually, free_port
from tests.s3server import (  # noqa: F401
    s3_credentials,
    s3_server,
    s3_settings,
    s3_settings_for,
    start_moto,
)

MiB = 1024 * 1024
FHIR = {"Content-Type": "application/fhir+json"}
PATHOLOGY = "11526-1"


async def open_stack(settings: Settings) -> TestClient:
    checks = await prepare(settings)
    assert all(c.status in ("applied", "ok") for c in checks), report(checks)[0]
    client = TestClient(TestServer(build_app(settings, list(SPECS.values()))))
    await client.start_server()
    return client


@pytest.fixture
async def stack_on(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    opened: list[TestClient] = []

    async def make(settings: Settings) -> TestClient:
        opened.append(await open_stack(settings))
        return opened[-1]

    yield make
    for client in opened:
        await client.close()


def objects_of(stack: TestClient) -> S3ObjectStore:
    store = stack.app[RUNTIME].ports.objects
    assert isinstance(store, S3ObjectStore)
    return store


async def post(stack: TestClient, tokens: Tokens, content: bytes = PDF, org: str = "RJ1") -> tuple[int, Any]:
    response = await stack.post(
        "/fhir/DocumentReference",
        json=document_reference(content=content, custodian=org),
        headers={**FHIR, **tokens.headers(org)},
    )
    return response.status, (await response.json(), response.headers)


async def stored(stack: TestClient, tokens: Tokens, doc_id: str) -> bool:
    response = await stack.get(f"/fhir/DocumentReference/{doc_id}", headers=tokens.headers("RJ1"))
    return response.status == 200


async def post_and_store(stack: TestClient, tokens: Tokens, content: bytes = PDF) -> str:
    status, (body, _) = await post(stack, tokens, content)
    assert status == 202, body
    await eventually(lambda: stored(stack, tokens, body["id"]))
    return str(body["id"])


# --- the adapter on its own -------------------------------------------------------------------------


async def test_multipart_upload_with_encryption_requested(s3_settings: Settings) -> None:
    settings = s3_settings.model_copy(update={"s3_part_size": 5 * MiB})
    await prepare(settings)
    store = open_object_store(settings)
    await store.start()
    try:
        big = os.urandom(11 * MiB)

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(big), MiB):
                yield big[i : i + MiB]

        info = await store.put("documents/RJ1/big", chunks(), content_type="application/pdf")
        small = await store.put("documents/RJ1/small", one_chunk(b"%PDF-1"), content_type="application/pdf")
        s3 = objects_of_store(store).client
        big_head = await s3.head_object(Bucket=settings.s3_bucket, Key="documents/RJ1/big")
        small_head = await s3.head_object(Bucket=settings.s3_bucket, Key="documents/RJ1/small")
    finally:
        await store.close()
    # A multipart object's ETag is "<md5 of part md5s>-<parts>": 5 + 5 + 1 MiB is three parts.
    assert big_head["ETag"].endswith('-3"')
    assert big_head["ServerSideEncryption"] == small_head["ServerSideEncryption"] == "AES256"
    assert (info.size, info.sha256) == (len(big), hashlib.sha256(big).hexdigest())
    assert small.sha256 == hashlib.sha256(b"%PDF-1").hexdigest()


def objects_of_store(store: ObjectStore) -> S3ObjectStore:
    assert isinstance(store, S3ObjectStore)
    return store


async def test_kms_encryption_is_requested_with_the_configured_key(s3_settings: Settings) -> None:
    key_id = "arn:aws:kms:eu-west-2:000000000000:key/lhcie-test"
    settings = s3_settings.model_copy(update={"s3_sse": "aws:kms", "s3_kms_key_id": key_id})
    await prepare(settings)
    store = objects_of_store(open_object_store(settings))
    await store.start()
    try:
        await store.put("documents/RJ1/k", one_chunk(b"{}"), content_type="application/json")
        head = await store.client.head_object(Bucket=settings.s3_bucket, Key="documents/RJ1/k")
    finally:
        await store.close()
    assert (head["ServerSideEncryption"], head["SSEKMSKeyId"]) == ("aws:kms", key_id)


async def test_unreachable_store_is_unavailable_not_an_error(tmp_path: Path, s3_credentials: None) -> None:
    settings = s3_settings_for(tmp_path, f"http://127.0.0.1:{free_port()}", s3_connect_timeout=0.5, s3_max_attempts=1)
    store = open_object_store(settings)
    await store.start()
    try:
        with pytest.raises(ObjectStoreUnavailable):
            await store.put("staging/x", one_chunk(b"x"), content_type="text/plain")
        with pytest.raises(ObjectStoreUnavailable):
            await store.read_all("staging/x")
        with pytest.raises(ObjectStoreUnavailable):
            await store.head("staging/x")
        assert await store.is_healthy() is False
    finally:
        await store.close()


async def test_storage_init_creates_then_checks_the_bucket(
    s3_settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LHCIE_S3_ENDPOINT_URL", str(s3_settings.s3_endpoint_url))
    monkeypatch.setenv("LHCIE_S3_BUCKET", s3_settings.s3_bucket)
    monkeypatch.setenv("LHCIE_S3_PATH_STYLE", "true")
    monkeypatch.setenv("LHCIE_DATA_DIR", str(s3_settings.data_dir))

    assert await asyncio.to_thread(cli.main, ["storage", "init", "--check"]) == 1
    assert capsys.readouterr().out == f"failed       bucket: {s3_settings.s3_bucket} does not exist\n"

    assert await asyncio.to_thread(cli.main, ["storage", "init"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"applied      bucket: {s3_settings.s3_bucket} created with object lock",
        "ok           versioning: enabled",  # object lock turns versioning on
        "applied      default encryption: AES256",
        "ok           object lock: enabled; documents retained in GOVERNANCE mode",
        "applied      lifecycle: staging/ expires after 7 day(s)",
        "applied      public access block: all public access blocked",
    ]
    assert await asyncio.to_thread(cli.main, ["storage", "init", "--check"]) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["ok"] * 6

    store = objects_of_store(open_object_store(s3_settings))
    await store.start()
    try:
        lifecycle = await store.client.get_bucket_lifecycle_configuration(Bucket=s3_settings.s3_bucket)
    finally:
        await store.close()
    staging_rule = next(r for r in lifecycle["Rules"] if r["ID"] == "lhcie-staging-expiry")
    assert staging_rule["Filter"] == {"Prefix": "staging/"}
    assert staging_rule["Expiration"] == {"Days": 7}


# --- the whole stack on S3 ---------------------------------------------------------------------------


async def test_filed_document_is_encrypted_retained_and_served_by_range(
    stack_on: Callable[..., Any], s3_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Storage reads its own settings from the environment when the app is built.
    monkeypatch.setenv("LHCIE_RETENTION_DAYS_BY_TYPE", json.dumps({PATHOLOGY: 3653}))
    settings = s3_settings
    stack = await stack_on(settings)
    tokens = Tokens(settings)
    doc_id = await post_and_store(stack, tokens)
    s3 = objects_of(stack).client
    key = f"documents/RJ1/{doc_id}"

    head = await s3.head_object(Bucket=settings.s3_bucket, Key=key)
    assert head["ServerSideEncryption"] == "AES256"
    assert head["ObjectLockMode"] == "GOVERNANCE"
    expected = datetime.now(UTC) + timedelta(days=3653)
    assert abs(head["ObjectLockRetainUntilDate"] - expected) < timedelta(hours=1)
    # The retained version cannot be deleted, and the staged copy is gone.
    with pytest.raises(ClientError) as refused:
        await s3.delete_object(Bucket=settings.s3_bucket, Key=key, VersionId=head["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert (await s3.list_objects_v2(Bucket=settings.s3_bucket, Prefix="staging/")).get("Contents") is None

    clinician = tokens.headers("RRV", "clinician")  # RRV has an accepted ISA with RJ1
    whole = await stack.get(f"/fhir/Binary/{doc_id}", headers=clinician)
    assert whole.status == 200
    assert whole.headers["Accept-Ranges"] == "bytes"
    assert await whole.read() == PDF
    etag = whole.headers["ETag"]

    part = await stack.get(f"/fhir/Binary/{doc_id}", headers={**clinician, "Range": "bytes=0-4"})
    assert (part.status, part.headers["Content-Range"], await part.read()) == (206, f"bytes 0-4/{len(PDF)}", b"%PDF-")
    tail = await stack.get(f"/fhir/Binary/{doc_id}", headers={**clinician, "Range": "bytes=-6"})
    assert (tail.status, await tail.read()) == (206, PDF[-6:])
    several = await stack.get(f"/fhir/Binary/{doc_id}", headers={**clinician, "Range": "bytes=0-1,4-5"})
    assert (several.status, await several.read()) == (200, PDF)  # RFC 9110 lets us send it all
    stale = await stack.get(
        f"/fhir/Binary/{doc_id}", headers={**clinician, "Range": "bytes=0-4", "If-Range": '"not-the-etag"'}
    )
    assert (stale.status, await stale.read()) == (200, PDF)
    fresh = await stack.get(f"/fhir/Binary/{doc_id}", headers={**clinician, "Range": "bytes=5-", "If-Range": etag})
    assert (fresh.status, await fresh.read()) == (206, PDF[5:])

    denied = await stack.get(
        f"/fhir/Binary/{doc_id}", headers={**tokens.headers("RAL", "clinician"), "Range": "bytes=0-4"}
    )
    assert denied.status == 403  # RAL has no ISA with RJ1

    outside = await stack.get(f"/fhir/Binary/{doc_id}", headers={**clinician, "Range": f"bytes={len(PDF)}-"})
    assert outside.status == 416
    assert outside.headers["Content-Range"] == f"bytes */{len(PDF)}"
    assert await outside.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "value",
                "details": {
                    "coding": [
                        {"system": "https://lhcie.london/fhir/CodeSystem/error-code", "code": "RANGE_NOT_SATISFIABLE"}
                    ]
                },
                "diagnostics": "The requested byte range is outside the document.",
            }
        ],
    }


async def test_presigned_redirect_only_after_the_access_decision(
    stack_on: Callable[..., Any], s3_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LHCIE_BINARY_REDIRECT", "true")
    monkeypatch.setenv("LHCIE_PRESIGN_TTL_SECONDS", "30")
    settings = s3_settings
    stack = await stack_on(settings)
    tokens = Tokens(settings)
    doc_id = await post_and_store(stack, tokens)

    redirected = await stack.get(
        f"/fhir/Binary/{doc_id}", headers=tokens.headers("RJ1", "clinician"), allow_redirects=False
    )
    assert redirected.status == 307
    location = redirected.headers["Location"]
    assert location.startswith(f"{settings.s3_endpoint_url}/{settings.s3_bucket}/documents/RJ1/{doc_id}?")
    assert "X-Amz-Expires=30" in location
    assert "X-Amz-Signature=" in location
    # No credentials: the signature is the permission (moto does not check signatures; S3 and MinIO do).
    async with aiohttp.ClientSession() as anonymous, anonymous.get(location) as fetched:
        assert (fetched.status, fetched.content_type, await fetched.read()) == (200, "application/pdf", PDF)
        assert fetched.headers["Cache-Control"] == "no-store"

    denied = await stack.get(
        f"/fhir/Binary/{doc_id}", headers=tokens.headers("RAL", "clinician"), allow_redirects=False
    )
    assert denied.status == 403
    assert "Location" not in denied.headers
    assert (await denied.json())["issue"][0]["diagnostics"] == (
        f"Access denied: not permitted by the sharing policy (reference {denied.headers['X-Correlation-Id']})."
    )


async def test_hash_mismatch_is_rejected_and_leaves_nothing_retrievable(
    stack_on: Callable[..., Any], s3_settings: Settings
) -> None:
    stack = await stack_on(s3_settings)
    tokens = Tokens(s3_settings)
    bus = stack.app[RUNTIME].ports.bus
    await bus.declare([QueueSpec("test.rejected", (RoutingKey.DOCUMENT_REJECTED,))])
    store = objects_of(stack)
    document_id, submission_id = str(uuid.uuid4()), str(uuid.uuid4())
    staging_key = f"staging/{submission_id}"
    # The staged bytes are not the bytes intake hashed: tampered with (or corrupted) in between.
    await store.put(staging_key, one_chunk(PDF + b"tampered"), content_type="application/pdf")
    facts = DocumentFacts(
        document_id=document_id,
        patient_nhs_number=TEST_PATIENT,
        custodian="RJ1",
        type_code=PATHOLOGY,
        content_type="application/pdf",
        size=len(PDF) + 8,
        sha256=hashlib.sha256(PDF).hexdigest(),
    )
    await bus.publish(
        Event.new(
            RoutingKey.DOCUMENT_RECEIVED,
            DocumentReceived(
                submission_id=submission_id,
                document=facts,
                staging_key=staging_key,
                actor=Actor(org="RJ1", role="system", subject="test"),
            ),
            source="urn:lhcie:test",
            subject=document_id,
        )
    )

    body = await eventually(lambda: bus.get("test.rejected"))
    rejected = Event.from_bytes(body).data
    assert (rejected["reason_code"], rejected["reason"]) == (
        "hash-mismatch",
        "staged content does not match the SHA-256 recorded at intake",
    )

    async def bucket_empty() -> bool:  # every version of the staged and the filed copy, after the event
        listed = await store.client.list_object_versions(Bucket=s3_settings.s3_bucket, Prefix="")
        return listed.get("Versions") is None and listed.get("DeleteMarkers") is None

    await eventually(bucket_empty)
    response = await stack.get(f"/fhir/Binary/{document_id}", headers=tokens.headers("RJ1", "clinician"))
    assert response.status == 404


async def test_a_filing_interrupted_after_the_s3_write_is_completed_on_redelivery(
    stack_on: Callable[..., Any], s3_settings: Settings
) -> None:
    # An earlier attempt wrote the permanent object, then the process died before recording it; the
    # staged copy has since gone (the lifecycle rule). The redelivered event must finish the filing.
    stack = await stack_on(s3_settings)
    tokens = Tokens(s3_settings)
    bus = stack.app[RUNTIME].ports.bus
    await bus.declare([QueueSpec("test.stored", (RoutingKey.DOCUMENT_STORED,))])
    store = objects_of(stack)
    document_id, submission_id = str(uuid.uuid4()), str(uuid.uuid4())
    await store.put(f"documents/RJ1/{document_id}", one_chunk(PDF), content_type="application/pdf")
    facts = DocumentFacts(
        document_id=document_id,
        patient_nhs_number=TEST_PATIENT,
        custodian="RJ1",
        type_code=PATHOLOGY,
        content_type="application/pdf",
        size=len(PDF),
        sha256=hashlib.sha256(PDF).hexdigest(),
    )
    await bus.publish(
        Event.new(
            RoutingKey.DOCUMENT_RECEIVED,
            DocumentReceived(
                submission_id=submission_id,
                document=facts,
                staging_key=f"staging/{submission_id}",
                actor=Actor(org="RJ1", role="system", subject="test"),
            ),
            source="urn:lhcie:test",
            subject=document_id,
        )
    )

    stored_event = Event.from_bytes(await eventually(lambda: bus.get("test.stored"))).data
    assert (stored_event["document"]["document_id"], stored_event["object_key"]) == (
        document_id,
        f"documents/RJ1/{document_id}",
    )
    response = await stack.get(f"/fhir/Binary/{document_id}", headers=tokens.headers("RJ1", "clinician"))
    assert (response.status, await response.read()) == (200, PDF)
    head = await store.client.head_object(Bucket=s3_settings.s3_bucket, Key=f"documents/RJ1/{document_id}")
    assert head["ObjectLockMode"] == "GOVERNANCE"


async def test_storage_verify_reports_missing_and_altered_objects(
    stack_on: Callable[..., Any],
    s3_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = await stack_on(s3_settings)
    tokens = Tokens(s3_settings)
    ids = [await post_and_store(stack, tokens, PDF + str(i).encode()) for i in range(3)]
    assert (await verify(s3_settings)).intact

    s3 = objects_of(stack).client
    # Retention keeps each version, but a new version or a delete marker changes what would be served.
    await s3.put_object(Bucket=s3_settings.s3_bucket, Key=f"documents/RJ1/{ids[0]}", Body=b"%PDF-forged")
    await s3.delete_object(Bucket=s3_settings.s3_bucket, Key=f"documents/RJ1/{ids[1]}")
    for name, value in {
        "LHCIE_S3_ENDPOINT_URL": str(s3_settings.s3_endpoint_url),
        "LHCIE_S3_BUCKET": s3_settings.s3_bucket,
        "LHCIE_S3_PATH_STYLE": "true",
        "LHCIE_DATA_DIR": str(s3_settings.data_dir),
    }.items():
        monkeypatch.setenv(name, value)

    assert await asyncio.to_thread(cli.main, ["storage", "verify"]) == 1
    assert sorted(capsys.readouterr().out.splitlines()) == sorted(
        [
            f"altered  {ids[0]} documents/RJ1/{ids[0]}: {len(b'%PDF-forged')} bytes, the index says {len(PDF) + 1}",
            f"missing  {ids[1]} documents/RJ1/{ids[1]}: no object under its key",
            "objects 2 problem(s): 3 object(s) checked.",
        ]
    )


async def test_s3_outage_mid_run_loses_no_accepted_document(
    tmp_path: Path, s3_credentials: None, stack_on: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    # A server of its own: pausing it must not disturb other tests. SIGSTOP keeps moto's in-memory
    # bucket, which a real restart of an S3 service would keep on disk (docs/storage.md).
    server = start_moto(tmp_path / "moto")
    try:
        settings = s3_settings_for(tmp_path / "data", server.url)
        await prepare(settings)
        # Short timeouts so that the outage shows quickly; the bucket was made with the defaults.
        settings = settings.model_copy(update={"s3_read_timeout": 1.0, "s3_max_attempts": 1})
        stack = await stack_on(settings)
        tokens = Tokens(settings)
        store = objects_of(stack)
        staged = 0
        original_put = store.put

        async def put_then_fail_after_third_staging(key: str, *args: Any, **kw: Any) -> Any:
            nonlocal staged
            info = await original_put(key, *args, **kw)
            if key.startswith("staging/"):
                staged += 1
                if staged == 3:
                    server.pause()  # between intake's staging write and storage's filing
            return info

        store.put = put_then_fail_after_third_staging  # type: ignore[method-assign]
        caplog.set_level(logging.WARNING, logger="shared.bus.base")
        contents = [PDF + f"document {i}".encode() for i in range(3)]
        accepted = []
        for content in contents:
            status, (body, _) = await post(stack, tokens, content)
            assert status == 202, body
            accepted.append(body["id"])

        status, (outcome, headers) = await post(stack, tokens, PDF + b"during the outage")
        assert (status, headers["Retry-After"], outcome["issue"][0]["code"]) == (503, "5", "transient")
        ready = await stack.get("/readyz")
        assert ready.status == 503
        await eventually(lambda: _storage_retried(caplog))

        server.resume()
        for doc_id in accepted:
            await eventually(lambda doc_id=doc_id: stored(stack, tokens, doc_id), timeout=40)
        for doc_id, content in zip(accepted, contents, strict=True):
            response = await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers("RJ1", "clinician"))
            assert (response.status, await response.read()) == (200, content)
        assert (await verify(settings)).checked == 3
    finally:
        server.stop()


async def _storage_retried(caplog: pytest.LogCaptureFixture) -> bool:
    return any(
        "bus.retry queue=storage.documents" in r.getMessage() and "object store unavailable" in r.getMessage()
        for r in caplog.records
    )
