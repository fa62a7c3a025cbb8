"""No NHS number and no name in any service's log (issue 14, clinical safety): a full document trip runs on
the embedded stack with every logger writing the JSON lines the services write (shared/logs.py, extras
included, at DEBUG so that a line an operator could switch on is scanned too), and every line is searched
for NHS numbers (ten digits, spaced or not, Modulus-11 valid or the trip's own) and the trip's names."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from shared.logs import QUIET, JsonFormatter
from tests.helpers import TEST_PATIENT, document_reference, eventually
from tests.unit.test_document_flow import FHIR, stored

PATIENT_NAME = ("Olivia", "Testpatient")
CARER_NAME = ("Sam", "Carer")  # the demo carer authorised by the test patient
CLINICIAN = ("Priya", "Shahtest")
NAMES = PATIENT_NAME + CARER_NAME + CLINICIAN
TEN_DIGITS = re.compile(r"(?<!\d)(\d{3})[ -]?(\d{3})[ -]?(\d{4})(?!\d)")


def modulus_11_valid(number: str) -> bool:
    total = sum(int(d) * w for d, w in zip(number[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    check = 0 if check == 11 else check
    return check != 10 and check == int(number[9])


def nhs_numbers_in(line: str) -> list[str]:
    found = ("".join(m.groups()) for m in TEN_DIGITS.finditer(line))
    return [n for n in found if n == TEST_PATIENT or modulus_11_valid(n)]


def names_in(line: str) -> list[str]:
    return [name for name in NAMES if name.lower() in line.lower()]


@pytest.fixture
def service_logs() -> Iterator[io.StringIO]:
    """Every logger's records as the services' JSON lines, whatever their level."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("stack"))
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    before = root.level, {name: logging.getLogger(name).level for name in QUIET}
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for name in QUIET:  # as shared.logs.configure leaves them in every service process
        logging.getLogger(name).setLevel(logging.WARNING)
    yield out
    root.removeHandler(handler)
    root.setLevel(before[0])
    for name, level in before[1].items():
        logging.getLogger(name).setLevel(level)


def test_the_scan_finds_what_it_looks_for() -> None:
    # It must be able to fail: the patient's number plain, spaced, and another valid one; names in any case.
    assert nhs_numbers_in(f'{{"message": "patient {TEST_PATIENT}"}}') == [TEST_PATIENT]
    assert nhs_numbers_in("nhs 943 476 5919 here") == ["9434765919"]
    assert nhs_numbers_in("took 1234567890 ms, id 12345678901") == []  # not Modulus-11 valid; eleven digits
    assert names_in('{"who": "olivia testpatient"}') == ["Olivia", "Testpatient"]


async def test_a_document_trip_logs_no_nhs_number_and_no_name(
    service_logs: io.StringIO, stack: TestClient, tokens: Any
) -> None:
    # service_logs comes first: the services' start-up lines are scanned too.
    resource = document_reference()
    resource["subject"]["display"] = " ".join(PATIENT_NAME)
    clinician = tokens.headers("RRV", "clinician", subject=f"{'.'.join(CLINICIAN).lower()}@RRV")
    coordinator = tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung")

    posted = await stack.post("/fhir/DocumentReference", json=resource, headers={**FHIR, **tokens.headers("RJ1")})
    assert posted.status == 202, await posted.text()
    doc_id = (await posted.json())["id"]
    await eventually(lambda: stored(stack, tokens, doc_id))

    async def alert() -> list[dict[str, Any]]:
        response = await stack.get("/fhir/Communication?recipient=CareTeam/rj1-lung", headers=coordinator)
        return (await response.json()).get("entry", [])

    [entry] = await eventually(alert)
    search = await stack.get(
        f"/fhir/DocumentReference?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{TEST_PATIENT}",
        headers=clinician,
    )
    assert search.status == 200 and len((await search.json())["entry"]) == 1
    retrieved = await stack.get(f"/fhir/Binary/{doc_id}", headers=clinician)
    assert retrieved.status == 200
    refused = await stack.get(f"/fhir/Binary/{doc_id}", headers=tokens.headers("RAL", "clinician"))
    assert refused.status == 403
    ack = await stack.post(f"/fhir/Communication/{entry['resource']['id']}/$acknowledge", headers=coordinator)
    assert ack.status == 200
    for who in ("patient", "carer"):
        headers = tokens.headers(
            "NHSLOGIN", who, patient=TEST_PATIENT, subject="carer@NHSLOGIN" if who == "carer" else None
        )

        async def reported(headers: dict[str, str] = headers) -> bool:
            response = await stack.get(f"/fhir/AuditEvent/$access-report?patient={TEST_PATIENT}", headers=headers)
            assert response.status == 200
            return "document.retrieved" in await response.text() or "Binary" in await response.text()

        await eventually(reported)
    page = await stack.get(f"/fhir/AuditEvent/$access-report?patient={TEST_PATIENT}&_format=html", headers=headers)
    assert page.status == 200

    lines = service_logs.getvalue().splitlines()
    loggers = {
        json.loads(line)["logger"].split(".")[1]
        for line in lines
        if line.startswith('{"time"') and json.loads(line)["logger"].startswith("services.")
    }
    assert {"intake", "storage", "notification"} <= loggers, "the capture missed the trip's own lines"
    hits = [(line, nhs_numbers_in(line), names_in(line)) for line in lines if nhs_numbers_in(line) or names_in(line)]
    print(f"log lines scanned: {len(lines)}")
    assert hits == []
