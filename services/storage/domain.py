"""Storage's use cases: verify and file a staged document; decide and serve a retrieval."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from services.storage.retention import retention_for
from services.storage.scanning import ContentScanner, ScannerUnavailable
from services.storage.settings import StorageSettings
from services.storage.verification import ContentRejected, check_digest, check_media_type
from shared.auth import Caller
from shared.bus import Retry
from shared.context import ServiceContext
from shared.correlation import client_request_id
from shared.events import (
    AccessDenied,
    Actor,
    DocumentFacts,
    DocumentReceived,
    DocumentRejected,
    DocumentRetrieved,
    DocumentStatusChanged,
    DocumentStored,
    Event,
    RoutingKey,
)
from shared.fhir.errors import Code, FhirError
from shared.media import needs_whole
from shared.objects import ObjectNotFound, ObjectStore, ObjectStoreUnavailable
from shared.policy import PolicyView
from shared.store import Index, Session

CURRENT = "current"

log = logging.getLogger(__name__)

# Content up to this size is parsed whole to check JSON/XML well-formedness.
PARSE_LIMIT = 16 * 1024 * 1024


def permanent_key(facts: DocumentFacts) -> str:
    # The document id is a UUID minted by intake, so keys cannot collide.
    return f"documents/{facts.custodian}/{facts.document_id}"


@dataclass(frozen=True)
class Retrieval:
    facts: DocumentFacts
    key: str


class Storage:
    def __init__(
        self,
        ctx: ServiceContext,
        objects: ObjectStore,
        scanner: ContentScanner | None = None,
        *,
        settings: StorageSettings,
    ) -> None:
        self.ctx = ctx
        self.objects = objects
        self.scanner = scanner
        self.settings = settings
        self.index = ctx.store.collection("objects", [Index(("facts.patient_nhs_number",))])
        self.policy = PolicyView(ctx.store)

    async def file(self, event: Event) -> None:
        received = event.payload()
        assert isinstance(received, DocumentReceived)
        facts = received.document
        if await self.index.get(facts.document_id) is not None:
            return  # already filed; its document.stored is in (or through) the outbox
        key = permanent_key(facts)
        try:
            try:
                await self._copy_verified(received, key)
            except ObjectNotFound:
                if await self.objects.head(key) is None:
                    raise ContentRejected("content-missing", "no staged content was found") from None
                # The staged copy is gone but a filed one exists (an earlier attempt died before
                # recording it): check that one as if it had just been copied.
                await self._verify_filed(facts, key)
            if self.scanner is not None:
                await self.scanner.scan(facts, lambda: self.objects.get(key))
            # Locked only once verified, so rejected content is never retained.
            retention = retention_for(self.settings, facts, datetime.now(UTC))
            retained = retention is not None and await self.objects.retain(
                key, until=retention.until, mode=retention.mode
            )
        except ContentRejected as rejected:
            await self._discard(key)
            await self._reject(event, received, rejected)
            return
        except ObjectStoreUnavailable as exc:
            raise Retry(f"object store unavailable: {exc}") from exc
        except ScannerUnavailable as exc:
            raise Retry(f"content scanner unavailable: {exc}") from exc
        stored = Event.new(
            RoutingKey.DOCUMENT_STORED,
            DocumentStored(
                submission_id=received.submission_id, document=facts, object_key=key, stored_at=datetime.now(UTC)
            ),
            source=self.ctx.source,
            subject=facts.document_id,
            correlation_id=event.correlationid,
            client_request_id=event.clientrequestid,
        )

        async def record(session: Session) -> None:
            await self.index.insert(
                {
                    "_id": facts.document_id,
                    "key": key,
                    "facts": facts.model_dump(mode="json"),
                    "stored_at": stored.data["stored_at"],
                    "retention": {"mode": retention.mode, "until": retention.until.isoformat()}
                    if retained and retention is not None
                    else None,
                },
                session=session,
            )
            await self.ctx.publish(stored, session=session)

        # Shared with other deliveries' records (one commit for them all): it reads nothing.
        await self.ctx.once(event, record, shared=True)
        await self._forget_staged(received.staging_key)
        log.info("storage.filed document=%s size=%d", facts.document_id, facts.size, extra={"code": "STO001"})

    async def _copy_verified(self, received: DocumentReceived, key: str) -> None:
        facts = received.document
        head = bytearray()
        whole = bytearray() if facts.size <= PARSE_LIMIT and needs_whole(facts.content_type) else None

        async def tee() -> AsyncIterator[bytes]:
            async for chunk in self.objects.get(received.staging_key):
                if len(head) < 1024:
                    head.extend(chunk[: 1024 - len(head)])
                if whole is not None:
                    whole.extend(chunk)
                yield chunk

        info = await self.objects.put(key, tee(), content_type=facts.content_type)
        check_digest(declared_size=facts.size, declared_sha256=facts.sha256, size=info.size, sha256=info.sha256)
        check_media_type(facts.content_type, bytes(head), bytes(whole) if whole is not None else None)

    async def _verify_filed(self, facts: DocumentFacts, key: str) -> None:
        digest, size, head = hashlib.sha256(), 0, bytearray()
        async for chunk in self.objects.get(key):
            digest.update(chunk)
            size += len(chunk)
            if len(head) < 1024:
                head.extend(chunk[: 1024 - len(head)])
        check_digest(declared_size=facts.size, declared_sha256=facts.sha256, size=size, sha256=digest.hexdigest())
        whole = await self.objects.read_all(key) if size <= PARSE_LIMIT and needs_whole(facts.content_type) else None
        check_media_type(facts.content_type, bytes(head), whole)

    async def _discard(self, key: str) -> None:
        try:
            await self.objects.delete(key)
        except ObjectStoreUnavailable as exc:
            # The content must not stay behind under its permanent key: try the whole message again.
            raise Retry(f"object store unavailable: {exc}") from exc

    async def _reject(self, event: Event, received: DocumentReceived, rejected: ContentRejected) -> None:
        reply = Event.new(
            RoutingKey.DOCUMENT_REJECTED,
            DocumentRejected(
                submission_id=received.submission_id,
                document=received.document,
                reason_code=rejected.code,
                reason=rejected.reason,
            ),
            source=self.ctx.source,
            subject=received.document.document_id,
            correlation_id=event.correlationid,
            client_request_id=event.clientrequestid,
        )
        await self.ctx.once(event, lambda session: self.ctx.publish(reply, session=session))
        await self._forget_staged(received.staging_key)
        log.warning(
            "storage.rejected document=%s code=%s",
            received.document.document_id,
            rejected.code,
            extra={"code": "STO002"},
        )

    async def _forget_staged(self, staging_key: str) -> None:
        try:
            await self.objects.delete(staging_key)
        except ObjectStoreUnavailable:
            # Harmless: the bucket's lifecycle rule expires unclaimed staging objects.
            log.warning("storage.staging_not_deleted", extra={"code": "STO003"})

    async def authorise(
        self,
        document_id: str,
        who: Caller,
        *,
        request_id: str,
        address: str | None,
        takes: Callable[[str], bool] | None = None,
    ) -> Retrieval:
        """May ``who`` read the document, and can it take the document's media type (``takes``, which the
        routes answer from the request)? Either way the decision is audited."""
        doc = await self.index.get(document_id)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        facts = DocumentFacts.model_validate(doc["facts"])
        actor = Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt, address=address)
        decision = await self.policy.decide(who, facts)
        status = doc.get("fhir_status", CURRENT)
        if status != CURRENT:
            # Superseded or withdrawn: say so to whoever may see the document, reveal nothing to others.
            if not decision.allowed:
                raise FhirError.of(Code.NOT_FOUND)
            replaced = f" by DocumentReference/{doc['replaced_by']}" if doc.get("replaced_by") else ""
            raise FhirError.of(Code.GONE, f"The document is {status}{replaced}; its content is no longer served.")
        if decision.allowed and takes is not None and not takes(facts.content_type):
            raise FhirError.of(
                Code.NOT_ACCEPTABLE,
                f"The document is {facts.content_type} (or a FHIR Binary as "
                "application/fhir+json); the Accept header admits neither.",
            )
        if not decision.allowed:
            await self._emit(
                Event.new(
                    RoutingKey.ACCESS_DENIED,
                    AccessDenied(
                        actor=actor,
                        resource=f"Binary/{document_id}",
                        action="read",
                        reason_code=decision.rule,
                        reason=decision.reason,
                        patient_nhs_number=facts.patient_nhs_number,
                    ),
                    source=self.ctx.source,
                    subject=f"Binary/{document_id}",
                    correlation_id=request_id,
                    client_request_id=client_request_id(),
                )
            )
            raise FhirError.of(Code.ACCESS_DENIED, decision.public(request_id))
        await self._emit(
            Event.new(
                RoutingKey.DOCUMENT_RETRIEVED,
                DocumentRetrieved(document=facts, actor=actor, rule=decision.rule),
                source=self.ctx.source,
                subject=document_id,
                correlation_id=request_id,
                client_request_id=client_request_id(),
            )
        )
        return Retrieval(facts=facts, key=doc["key"])

    async def change_status(self, event: Event) -> None:
        """A document was superseded or withdrawn at intake: its content stops being served (410)."""
        changed = event.payload()
        assert isinstance(changed, DocumentStatusChanged)
        await self.ctx.once(
            event,
            lambda session: self.index.update(
                {"_id": changed.document.document_id},
                {"fhir_status": changed.status, "replaced_by": changed.replaced_by},
                session=session,
            ),
        )

    async def presigned_url(self, retrieval: Retrieval) -> str | None:
        """Where to redirect the caller instead of streaming, when configured and the store can."""
        if not self.settings.binary_redirect:
            return None
        return await self.objects.presign(
            retrieval.key, ttl=self.settings.presign_ttl_seconds, content_type=retrieval.facts.content_type
        )

    async def _emit(self, event: Event) -> None:
        async with self.ctx.store.transaction() as session:
            await self.ctx.publish(event, session=session)
        self.ctx.outbox.notify()
