"""Small helpers shared by the test suites (no fixtures here; see conftest.py)."""

from __future__ import annotations

import asyncio
import base64
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from shared.fhir.identifiers import LOINC, NHS_NUMBER, ODS_CODE

T = TypeVar("T")
TEST_PATIENT = "9000000009"
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def eventually(probe: Callable[[], Awaitable[T | None]], *, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy (a wait for an asynchronous effect, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)


def document_reference(
    *,
    content: bytes = PDF,
    content_type: str = "application/pdf",
    patient: str = TEST_PATIENT,
    custodian: str = "RJ1",
    type_code: str = "11526-1",
    related: tuple[str, ...] = ("CareTeam/rj1-lung",),
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": type_code, "display": "Pathology study"}]},
        "subject": {"identifier": {"system": NHS_NUMBER, "value": patient}},
        "custodian": {"identifier": {"system": ODS_CODE, "value": custodian}},
        "content": [{"attachment": {"contentType": content_type, "data": base64.b64encode(content).decode()}}],
    }
    if related:
        resource["context"] = {"related": [{"reference": r} for r in related]}
    return resource


# What `lhcie serve` (and `python -m services.<name>`) needs beyond the bus and store URLs: the settings that
# have no safe default, and the embedded issuer enabled on purpose (tests mint tokens with it).
SERVE_ENV = {
    "LHCIE_EMBEDDED_ISSUER": "true",
    "LHCIE_JWT_ISSUER": "lhcie-embedded",
    "LHCIE_JWT_AUDIENCE": "lhcie",
    "LHCIE_S3_BUCKET": "lhcie-documents",
}
