"""``lhcie storage verify``: re-read every filed object and compare it with the objects index."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shared.config import Settings
from shared.objects import ObjectNotFound, ObjectStore, open_object_store
from shared.store import Collection, open_store

PAGE = 500
MISSING, ALTERED = "missing", "altered"


@dataclass(frozen=True)
class Finding:
    document_id: str
    key: str
    problem: str
    detail: str


@dataclass
class IntegrityReport:
    checked: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.findings


async def check_object(objects: ObjectStore, document_id: str, key: str, size: int, sha256: str) -> Finding | None:
    digest = hashlib.sha256()
    read = 0
    try:
        async for chunk in objects.get(key):
            digest.update(chunk)
            read += len(chunk)
    except ObjectNotFound:
        return Finding(document_id, key, MISSING, "no object under its key")
    if read != size:
        return Finding(document_id, key, ALTERED, f"{read} bytes, the index says {size}")
    if digest.hexdigest() != sha256:
        return Finding(document_id, key, ALTERED, "SHA-256 differs from the index")
    return None


async def verify_objects(index: Collection, objects: ObjectStore) -> IntegrityReport:
    report = IntegrityReport()
    skip = 0
    while True:
        docs = await index.find(None, sort=[("_id", 1)], limit=PAGE, skip=skip)
        for doc in docs:
            facts = doc["facts"]
            finding = await check_object(objects, doc["_id"], doc["key"], facts["size"], facts["sha256"])
            report.checked += 1
            if finding is not None:
                report.findings.append(finding)
        if len(docs) < PAGE:
            return report
        skip += PAGE


async def verify(settings: Settings) -> IntegrityReport:
    """Open storage's own index and the object store, check every object, close both."""
    store = open_store(settings, "storage")
    index = store.collection("objects")
    objects = open_object_store(settings)
    await store.start()
    try:
        await objects.start()
        try:
            return await verify_objects(index, objects)
        finally:
            await objects.close()
    finally:
        await store.close()


def render(report: IntegrityReport) -> tuple[str, int]:
    """Lines to print (document ids and keys only, never patient data) and the exit status."""
    lines = [f"{f.problem:<8} {f.document_id} {f.key}: {f.detail}" for f in report.findings]
    state = "intact" if report.intact else f"{len(report.findings)} problem(s)"
    lines.append(f"objects {state}: {report.checked} object(s) checked.")
    return "\n".join(lines), 0 if report.intact else 1
