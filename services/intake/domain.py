"""Intake's use cases: accept submissions (one document or a bundle), read, search, replace, withdraw.

Every submission follows the same path whatever its form: the metadata is checked, the bytes are streamed
to the staging area while their SHA-256 (and SHA-1, for a declared R4 hash) are computed, the content is
checked against what was declared, and then the registry rows and their ``document.received`` events are
written in one transaction. Anything that fails before that commit deletes what it staged.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from services.intake.catalogue import Catalogue
from services.intake.folders import Folders
from services.intake.registry import (
    CURRENT,
    ENTERED_IN_ERROR,
    RECEIVED,
    REJECTED,
    SCAN_LIMIT,
    STORED,
    SUPERSEDED,
    DocumentRegistry,
    facts_of,
    to_fhir,
    version_of,
)
from services.intake.validation import Metadata, content_issues
from shared import media
from shared.auth import Caller
from shared.context import ServiceContext
from shared.correlation import client_request_id
from shared.events import (
    AccessDenied,
    Actor,
    DocumentFacts,
    DocumentReceived,
    DocumentSearched,
    DocumentStatusChanged,
    Event,
    RecordRead,
    RoutingKey,
)
from shared.fhir.errors import Code, FhirError, Issue
from shared.objects import ObjectStore, ObjectStoreUnavailable, one_chunk
from shared.policy import PolicyView, denied_text
from shared.store import Document, DuplicateKey, Filter, Session

log = logging.getLogger(__name__)
PARSE_LIMIT = 16 * 1024 * 1024  # media checks parse JSON/XML/text content up to this size


def actor_of(who: Caller, address: str | None = None) -> Actor:
    return Actor(org=who.org, role=who.role, subject=who.subject, mdt=who.mdt, address=address)


class StagingUnavailable(Exception):
    """The object store could not take the document: nothing was accepted, the client may try again."""


@dataclass(frozen=True)
class Pending:
    """A read of a document accepted but not yet stored: ask again in ``retry_after`` seconds."""

    message: str
    retry_after: int = 1


@dataclass(frozen=True)
class Staged:
    meta: Metadata
    document_id: str
    submission_id: str
    staging_key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Found:
    """A page of search results; ``total`` is None when the search matched too many to count."""

    resources: list[dict[str, Any]]
    total: int | None
    more: bool


@dataclass(frozen=True)
class Accepted:
    """One document of an accepted submission; ``created`` is False for an idempotent repeat."""

    document: Document
    created: bool


class ContentTap:
    """Passes a document's bytes through while taking its SHA-1, its first bytes and (if small) all of it."""

    def __init__(self, chunks: AsyncIterable[bytes], limit: int, *, keep_whole: bool = True) -> None:
        self._chunks = chunks
        self._limit = limit
        self.sha1 = hashlib.sha1(usedforsecurity=False)
        self.head = bytearray()
        # A PDF or an image is recognised by its first bytes: only text formats are kept whole to be parsed.
        self.whole: bytearray | None = bytearray() if keep_whole else None
        self.size = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            self.sha1.update(chunk)
            self.size += len(chunk)
            if len(self.head) < 1024:
                self.head.extend(chunk[: 1024 - len(self.head)])
            if self.whole is not None:
                if self.size <= PARSE_LIMIT:
                    self.whole.extend(chunk)
                else:
                    self.whole = None
            if self.size > self._limit:
                raise FhirError.of(Code.TOO_LARGE, f"The document exceeds {self._limit} bytes.")
            yield chunk


def _media_problem(content_type: str, tap: ContentTap) -> str | None:
    try:
        media.check(content_type, bytes(tap.head), bytes(tap.whole) if tap.whole is not None else None)
    except media.MediaMismatch as exc:
        return str(exc)
    return None


class Intake:
    def __init__(
        self, ctx: ServiceContext, objects: ObjectStore, catalogue: Catalogue, *, max_document_bytes: int
    ) -> None:
        self.ctx = ctx
        self.objects = objects
        self.catalogue = catalogue
        self.max_document_bytes = max_document_bytes
        self.registry = DocumentRegistry(ctx.store)
        self.folders = Folders(ctx.store)
        self.policy = PolicyView(ctx.store)

    # -- submission -------------------------------------------------------------------------------

    async def stage(self, meta: Metadata, content: AsyncIterable[bytes] | bytes) -> Staged:
        """Stream the document to the staging area and check it; nothing stays behind if it fails.

        ``content``: the bytes as they arrive, or all of them (inline base64, a bundle's Binary)."""
        document_id, submission_id = str(uuid.uuid4()), str(uuid.uuid4())
        staging_key = f"staging/{submission_id}"
        chunks = one_chunk(content) if isinstance(content, bytes) else content
        tap = ContentTap(chunks, self.max_document_bytes, keep_whole=media.needs_whole(meta.content_type))
        try:
            if isinstance(content, bytes):
                # In hand already: taken through the tap (size limit, SHA-1, head) before anything is written,
                # then written in one piece (the file store's one hop to its thread instead of two).
                async for _ in tap:
                    pass
                info = await self.objects.put_bytes(staging_key, content, content_type=meta.content_type)
            else:
                info = await self.objects.put(staging_key, tap, content_type=meta.content_type)
        except ObjectStoreUnavailable:
            raise StagingUnavailable from None
        except BaseException:
            await self._forget(staging_key)
            raise
        try:
            issues = content_issues(
                meta, size=info.size, sha1=tap.sha1.digest(), media_problem=_media_problem(meta.content_type, tap)
            )
        except BaseException:
            await self._forget(staging_key)
            raise
        if issues:
            await self._forget(staging_key)
            raise FhirError(issues)
        return Staged(meta, document_id, submission_id, staging_key, info.size, info.sha256)

    async def discard(self, staged: Sequence[Staged]) -> None:
        for item in staged:
            await self._forget(item.staging_key)

    async def _forget(self, key: str) -> None:
        try:
            await self.objects.delete(key)
        except ObjectStoreUnavailable:
            log.warning("intake.staging_not_deleted", extra={"code": "INT003"})  # expired by lifecycle rule

    async def check_references(self, metas: Sequence[tuple[str, Metadata]], who: Caller) -> None:
        """Known organisations, and replaceable targets; one issue per problem (422 or 409)."""
        issues: list[Issue] = []
        organisation = await self.policy.organisation(who.org)
        if organisation is None or not organisation.active:
            issues.append(
                Issue(
                    Code.BUSINESS_RULE,
                    f"{who.org} is not a registered organisation of the exchange.",
                    "DocumentReference.custodian",
                )
            )
        for prefix, meta in metas:
            for target in meta.replaces:
                old = await self.registry.get(target)
                if old is None or old["custodian"] != who.org:
                    issues.append(
                        Issue(
                            Code.BUSINESS_RULE,
                            "relatesTo.target is not a document of this custodian.",
                            f"{prefix}.relatesTo",
                        )
                    )
                elif old["status"] != STORED or old.get("fhir_status") != CURRENT:
                    issues.append(
                        Issue(Code.CONFLICT, "Only a stored, current document can be replaced.", f"{prefix}.relatesTo")
                    )
        if issues:
            raise FhirError(issues, status=max(i.code.status for i in issues))

    async def accept(
        self,
        staged: Sequence[Staged],
        who: Caller,
        *,
        request_id: str,
        address: str | None,
        idempotency_key: str | None = None,
        bundle_id: str | None = None,
        bundle_layout: dict[str, Any] | None = None,
        folders: Sequence[Document] = (),
        recipients: Sequence[tuple[str, ...]] = (),
    ) -> list[Accepted]:
        """Record every staged document and its event, and the bundle's ``folders``, in one transaction:
        all or none.

        ``recipients``: each staged document's admitted intended recipients, carried on its event.

        A repeat of an earlier submission (same master identifier or Idempotency-Key, same bytes) returns
        the original; the same identifier with different bytes is a conflict (409).
        """
        try:
            repeats = [await self._earlier(s, who, idempotency_key) for s in staged]
        except BaseException:  # a conflicting repeat (409), the store down, the client gone: nothing stays
            await self.discard(staged)
            raise
        if all(r is not None for r in repeats):
            await self.discard(staged)
            return [Accepted(r, created=False) for r in repeats if r is not None]
        if any(r is not None for r in repeats):
            await self.discard(staged)
            raise FhirError.of(Code.CONFLICT, "Some documents of this bundle were submitted before and some not.")
        actor = actor_of(who, address)
        try:
            async with self.ctx.store.transaction() as session:
                docs = [
                    await self._record(
                        s,
                        i,
                        actor,
                        request_id,
                        idempotency_key,
                        bundle_id,
                        session,
                        bundle_layout if i == 0 else None,
                        recipients[i] if i < len(recipients) else (),
                    )
                    for i, s in enumerate(staged)
                ]
                for folder in folders:
                    await self.folders.save(folder, session)
        except DuplicateKey:
            # A concurrent duplicate won the race: answer as if it had come first.
            repeats = [await self._earlier(s, who, idempotency_key) for s in staged]
            await self.discard(staged)
            if all(r is not None for r in repeats):
                return [Accepted(r, created=False) for r in repeats if r is not None]
            raise FhirError.of(Code.CONFLICT, "A concurrent submission used the same identifiers.") from None
        except BaseException:
            await self.discard(staged)
            raise
        self.ctx.outbox.notify()
        log.info("intake.accepted documents=%d", len(docs), extra={"code": "INT001"})
        return [Accepted(d, created=True) for d in docs]

    async def _earlier(self, staged: Staged, who: Caller, idempotency_key: str | None) -> Document | None:
        keys: list[Filter] = []
        if staged.meta.master_identifier:
            keys.append({"master_key": f"{who.org}|{staged.meta.master_identifier}"})
        if idempotency_key:
            keys.append({"idempotency_key": f"{who.org}|{idempotency_key}"})
        for where in keys:
            earlier = await self.registry.find_one(where)
            if earlier is not None:
                if earlier["facts"]["sha256"] != staged.sha256 or earlier.get("status") == REJECTED:
                    raise FhirError.of(
                        Code.CONFLICT,
                        "This identifier was already used for a different document.",
                        "DocumentReference.masterIdentifier" if "master_key" in where else None,
                    )
                if earlier["resource"] != staged.meta.resource:
                    # A repeat is the same submission: other metadata under the same identifier is not a
                    # repeat, and answering "created" would tell the source its new metadata was kept.
                    raise FhirError.of(
                        Code.CONFLICT,
                        "This identifier was already used with different metadata; "
                        "to change a document, replace it (relatesTo replaces).",
                        "DocumentReference.masterIdentifier" if "master_key" in where else None,
                    )
                return earlier
        return None

    async def _record(
        self,
        s: Staged,
        index: int,
        actor: Actor,
        request_id: str,
        idempotency_key: str | None,
        bundle_id: str | None,
        session: Session,
        bundle_layout: dict[str, Any] | None = None,
        recipients: tuple[str, ...] = (),
    ) -> Document:
        meta = s.meta
        facts = DocumentFacts(
            document_id=s.document_id,
            patient_nhs_number=meta.patient_nhs_number,
            custodian=meta.custodian,
            type_system=meta.document_type.system,
            type_code=meta.document_type.code,
            type_display=meta.type_display,
            related=meta.related,
            content_type=meta.content_type,
            size=s.size,
            sha256=s.sha256,
            intended_recipients=recipients,
        )
        doc = await self.registry.record(
            facts=facts,
            submission_id=s.submission_id,
            resource=meta.resource,
            staging_key=s.staging_key,
            actor=actor,
            search={**meta.search, "category_code": meta.document_type.category},
            replaces=meta.replaces,
            master_key=f"{meta.custodian}|{meta.master_identifier}" if meta.master_identifier else None,
            idempotency_key=f"{actor.org}|{idempotency_key}" if idempotency_key and index == 0 else None,
            bundle_id=bundle_id,
            bundle_index=index if bundle_id else None,
            bundle_layout=bundle_layout,
            session=session,
        )
        await self.ctx.publish(
            Event.new(
                RoutingKey.DOCUMENT_RECEIVED,
                DocumentReceived(submission_id=s.submission_id, document=facts, staging_key=s.staging_key, actor=actor),
                source=self.ctx.source,
                subject=s.document_id,
                correlation_id=request_id,
                client_request_id=client_request_id(),
            ),
            session=session,
        )
        return doc

    # -- lifecycle --------------------------------------------------------------------------------

    async def on_stored(self, document_id: str, session: Session) -> None:
        """A replacement became available: the documents it replaces are now superseded."""
        doc = await self.registry.get(document_id, session)
        if doc is None:
            return
        actor = Actor.model_validate(doc["submitted_by"])
        for target in doc.get("replaces", []):
            old = await self.registry.get(target, session)
            if old and await self.registry.set_fhir_status(
                target, SUPERSEDED, replaced_by=document_id, session=session
            ):
                await self._status_event(
                    RoutingKey.DOCUMENT_SUPERSEDED, old, SUPERSEDED, actor, session, replaced_by=document_id
                )

    async def withdraw(
        self, document_id: str, who: Caller, *, request_id: str, if_match: int | None = None
    ) -> dict[str, Any]:
        """The custodian marks its document entered-in-error; ``if_match``: only if still at that version."""
        doc = await self.registry.get(document_id)
        if doc is None or doc["status"] != STORED or doc["custodian"] != who.org:
            raise (
                FhirError.of(Code.NOT_FOUND)
                if doc is None or doc["custodian"] != who.org
                else FhirError.of(Code.CONFLICT, "Only a stored document can be withdrawn.")
            )
        if if_match is not None and if_match != version_of(doc):
            raise FhirError.of(Code.PRECONDITION_FAILED, f"The document is at version {version_of(doc)}.")
        if doc.get("fhir_status") == ENTERED_IN_ERROR:
            return to_fhir(doc)
        async with self.ctx.store.transaction() as session:
            if await self.registry.set_fhir_status(document_id, ENTERED_IN_ERROR, session=session):
                await self._status_event(
                    RoutingKey.DOCUMENT_WITHDRAWN,
                    doc,
                    ENTERED_IN_ERROR,
                    actor_of(who),
                    session,
                    correlation_id=request_id,
                )
            else:
                raise FhirError.of(
                    Code.CONFLICT, "A superseded document cannot be withdrawn; withdraw its replacement."
                )
        self.ctx.outbox.notify()
        updated = await self.registry.get(document_id)
        assert updated is not None
        return to_fhir(updated)

    async def _status_event(
        self,
        key: RoutingKey,
        doc: Document,
        status: str,
        actor: Actor,
        session: Session,
        *,
        replaced_by: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        await self.ctx.publish(
            Event.new(
                key,
                DocumentStatusChanged(document=facts_of(doc), status=status, replaced_by=replaced_by, actor=actor),
                source=self.ctx.source,
                subject=doc["_id"],
                correlation_id=correlation_id,
                client_request_id=client_request_id() if correlation_id else None,
            ),
            session=session,
        )

    # -- reading ----------------------------------------------------------------------------------

    async def read(
        self,
        document_id: str,
        who: Caller,
        *,
        request_id: str,
        address: str | None = None,
        version: int | None = None,
        history: bool = False,
    ) -> dict[str, Any] | list[dict[str, Any]] | Pending:
        """The current version, one ``version`` (vread), or every version newest first (``history``)."""
        doc = await self.registry.get(document_id)
        if doc is None:
            raise FhirError.of(Code.NOT_FOUND)
        submitter = doc["submitted_by"]["org"] == who.org
        if doc["status"] == STORED:
            if version is not None and not 1 <= version <= version_of(doc):
                raise FhirError.of(Code.NOT_FOUND, "No such version of this document.")
            decision = await self.policy.decide(who, facts_of(doc))
            if not decision.allowed:
                await self.deny(
                    who,
                    f"DocumentReference/{document_id}",
                    decision.rule,
                    decision.reason,
                    patient=doc["patient"],
                    request_id=request_id,
                )
            # Every read of the metadata is on the record (BALP PatientRead), so it reaches the patient's
            # access report as a Binary read does.
            resource = f"DocumentReference/{document_id}" + (f"/_history/{version}" if version else "")
            event = Event.new(
                RoutingKey.RECORD_READ,
                RecordRead(
                    actor=actor_of(who, address),
                    resource=resource,
                    action="vread" if version or history else "read",
                    patient_nhs_number=doc["patient"],
                    rule=decision.rule,
                ),
                source=self.ctx.source,
                subject=f"DocumentReference/{document_id}",
                correlation_id=request_id,
                client_request_id=client_request_id(),
            )
            async with self.ctx.store.transaction() as session:
                await self.ctx.publish(event, session=session)
            self.ctx.outbox.notify()
            if history:
                return [to_fhir(doc, n) for n in range(version_of(doc), 0, -1)]
            return to_fhir(doc, version)
        if not submitter:
            raise FhirError.of(Code.NOT_FOUND)
        if doc["status"] == RECEIVED:
            return Pending("The document was accepted and is being stored.")
        assert doc["status"] == REJECTED
        raise FhirError(
            [Issue(Code.PROCESSING, f"The document was rejected: {doc['rejection']['reason']}", "DocumentReference")]
        )

    async def search(
        self, where: Filter, who: Caller, *, count: int, offset: int, query: str, request_id: str, address: str | None
    ) -> Found:
        """One page of the documents ``who`` may see, and how many there are in all.

        The policy is decided for every match before paging, so pages are full, ``total`` counts only what
        the caller may see, and no page reveals that hidden documents exist.
        """
        docs = await self.registry.search(where)
        complete = len(docs) <= SCAN_LIMIT
        decisions: dict[str, bool] = {}
        visible = []
        for doc in docs[:SCAN_LIMIT]:
            facts = facts_of(doc)
            # The decision depends on the document's organisation, type and patient, not on its id.
            key = facts.model_dump_json(exclude={"document_id", "size", "sha256", "content_type"})
            if key not in decisions:
                decisions[key] = (await self.policy.decide(who, facts)).allowed
            if decisions[key]:
                visible.append(doc)
        page = [to_fhir(doc) for doc in visible[offset : offset + count]]
        # Every search is audited (BALP PatientQuery), whatever it found.
        event = Event.new(
            RoutingKey.DOCUMENT_SEARCHED,
            DocumentSearched(
                actor=actor_of(who, address), patient_nhs_number=where["patient"], query=query, results=len(page)
            ),
            source=self.ctx.source,
            subject="DocumentReference",
            correlation_id=request_id,
            client_request_id=client_request_id(),
        )
        async with self.ctx.store.transaction() as session:
            await self.ctx.publish(event, session=session)
        self.ctx.outbox.notify()
        return Found(page, total=len(visible) if complete else None, more=offset + count < len(visible) or not complete)

    async def bundle_state(self, bundle_id: str, who: Caller) -> list[Document]:
        docs = await self.registry.in_bundle(bundle_id)
        if not docs or docs[0]["submitted_by"]["org"] != who.org:
            raise FhirError.of(Code.NOT_FOUND)
        return docs

    async def deny(
        self, who: Caller, resource: str, rule: str, reason: str, *, patient: str | None, request_id: str
    ) -> None:
        event = Event.new(
            RoutingKey.ACCESS_DENIED,
            AccessDenied(
                actor=actor_of(who),
                resource=resource,
                action="read",
                reason_code=rule,
                reason=reason,
                patient_nhs_number=patient,
            ),
            source=self.ctx.source,
            subject=resource,
            correlation_id=request_id,
            client_request_id=client_request_id(),
        )
        async with self.ctx.store.transaction() as session:
            await self.ctx.publish(event, session=session)
        self.ctx.outbox.notify()
        raise FhirError.of(Code.ACCESS_DENIED, denied_text(request_id))
