"""MHD Folders: a List coded ``folder`` that groups one patient's documents of one organisation.

A folder is created (POST) or updated (PUT ``List/{id}`` of its new state, MHD's addToFolder: entries are
added, never removed) inside an ITI-65
bundle, and written in the same transaction as the bundle's documents: all or nothing. Only the
organisation that created a folder reads or updates it, and a folder holds only that organisation's
documents of its own patient.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.intake.bundles import BundleFolder
from services.intake.registry import REJECTED, DocumentRegistry
from shared.auth import Caller
from shared.fhir.errors import Code, FhirError, Issue
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE
from shared.store import Document, DocumentStore, Index, Session

FOLDER_CODE = {"system": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes", "code": "folder"}


@dataclass(frozen=True)
class PlannedFolder:
    """A folder write checked against the registry; document ids of the bundle's new documents are known
    only once they are staged, so ``items`` still holds ("new", position) for those."""

    index: int
    folder_id: str
    created: bool
    patient: str
    resource: dict[str, Any]
    items: tuple[tuple[str, Any], ...]
    version: int

    def document(self, org: str, new_ids: list[str]) -> Document:
        items = [new_ids[value] if kind == "new" else value for kind, value in self.items]
        kept = {k: v for k, v in self.resource.items() if k not in ("id", "meta", "entry", "subject")}
        return {
            "_id": self.folder_id,
            "org": org,
            "patient": self.patient,
            "resource": kept,
            "items": items,
            "version": self.version,
            "updated_at": datetime.now(UTC).isoformat(),
            "meta": {k: v for k, v in (self.resource.get("meta") or {}).items() if k in ("security", "profile")},
        }


class Folders:
    def __init__(self, store: DocumentStore) -> None:
        self._folders = store.collection("folders", [Index(("org",))])

    async def get(self, folder_id: str) -> Document | None:
        return await self._folders.get(folder_id)

    async def save(self, folder: Document, session: Session) -> None:
        """Create the folder, or update it if it is still at the version it was planned from; a concurrent
        update in between fails the whole bundle (409) rather than losing either one's entries."""
        if folder["version"] == 1:
            await self._folders.insert(folder, session=session)
            return
        changes = {k: v for k, v in folder.items() if k != "_id"}
        if not await self._folders.update(
            {"_id": folder["_id"], "version": folder["version"] - 1}, changes, session=session
        ):
            raise FhirError.of(Code.CONFLICT, "The folder was changed by another submission; send the bundle again.")

    async def plan(
        self, folders: tuple[BundleFolder, ...], bundle_patients: list[str], who: Caller, registry: DocumentRegistry
    ) -> tuple[list[PlannedFolder], list[Issue]]:
        """Each folder of a bundle checked: whose it is, whose patient, whose documents.

        ``bundle_patients``: the NHS number of each of the bundle's documents, in bundle order.
        """
        planned: list[PlannedFolder] = []
        issues: list[Issue] = []
        for folder in folders:
            where = f"Bundle.entry[{folder.index}].resource"
            existing = await self.get(folder.folder_id) if folder.folder_id else None
            if folder.folder_id and (existing is None or existing["org"] != who.org):
                # Another organisation's folder is as invisible as one that does not exist.
                issues.append(
                    Issue(
                        Code.NOT_FOUND,
                        "No such folder of this organisation; create one with POST List.",
                        f"Bundle.entry[{folder.index}].request.url",
                    )
                )
                continue
            items_patients = {bundle_patients[v] for k, v in folder.items if k == "new"}
            patient = folder.patient or (existing["patient"] if existing else None)
            if patient is None and len(items_patients | set(bundle_patients)) == 1:
                patient = bundle_patients[0]  # a folder without a subject is about the bundle's one patient
            if patient is None:
                issues.append(
                    Issue(
                        Code.INVALID_RESOURCE,
                        f"A Folder's subject must be the patient's NHS number ({NHS_NUMBER}).",
                        f"{where}.subject",
                    )
                )
                continue
            if existing is not None and folder.if_match is not None and folder.if_match != existing["version"]:
                issues.append(
                    Issue(
                        Code.PRECONDITION_FAILED,
                        f"The folder is at version {existing['version']}.",
                        f"Bundle.entry[{folder.index}].request.ifMatch",
                    )
                )
                continue
            if existing is not None and existing["patient"] != patient:
                issues.append(Issue(Code.BUSINESS_RULE, "A folder's patient cannot change.", f"{where}.subject"))
                continue
            kept = {value for kind, value in folder.items if kind == "existing"}
            removed = [i for i in (existing or {}).get("items", []) if i not in kept]
            if removed:
                # As in XDS, a document once filed in a folder stays there.
                issues.append(
                    Issue(
                        Code.BUSINESS_RULE,
                        "An update of a folder must keep every document it holds "
                        f"({len(removed)} left out); entries can be added, not removed.",
                        f"{where}.entry",
                    )
                )
                continue
            problems = [
                n
                for n, (kind, value) in enumerate(folder.items)
                if (kind == "new" and bundle_patients[value] != patient)
                or (kind == "existing" and not await self._may_hold(value, patient, who, registry))
            ]
            issues += [
                Issue(
                    Code.BUSINESS_RULE,
                    "A folder may hold only documents of its own patient whose custodian is this organisation.",
                    f"{where}.entry[{n}].item",
                )
                for n in problems
            ]
            planned.append(
                PlannedFolder(
                    folder.index,
                    folder.folder_id or str(uuid.uuid4()),
                    existing is None,
                    patient,
                    folder.resource,
                    folder.items,
                    (existing or {}).get("version", 0) + 1,
                )
            )
        return planned, issues

    @staticmethod
    async def _may_hold(document_id: str, patient: str, who: Caller, registry: DocumentRegistry) -> bool:
        doc = await registry.get(document_id)
        return (
            doc is not None and doc["custodian"] == who.org and doc["patient"] == patient and doc["status"] != REJECTED
        )


def to_fhir(folder: Document) -> dict[str, Any]:
    """The folder as MHD's Folder List."""
    resource = dict(folder["resource"])
    resource.update(
        {
            "resourceType": "List",
            "id": folder["_id"],
            "meta": {
                **folder.get("meta", {}),
                "versionId": str(folder["version"]),
                "lastUpdated": folder["updated_at"],
            },
            "subject": {"identifier": {"system": NHS_NUMBER, "value": folder["patient"]}},
            "source": resource.get("source") or {"identifier": {"system": ODS_CODE, "value": folder["org"]}},
            "entry": [{"item": {"reference": f"DocumentReference/{i}"}} for i in folder["items"]],
        }
    )
    resource.setdefault("status", "current")
    resource.setdefault("mode", "working")
    resource.setdefault("code", {"coding": [FOLDER_CODE]})
    return resource
