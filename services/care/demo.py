"""The embedded run's demo: one end-of-life care plan and one repatriation in progress.

They are made through the same use cases as any request (so their events and audit records exist),
before the service serves. The policy replica may not yet have heard of the demo ISA between RJ1 and RRV
(agreements announces it at its own start), so the repatriation is sent as already decided.
"""

from __future__ import annotations

import logging

from services.care import examples
from services.care.domain import Care
from shared.auth import Caller

log = logging.getLogger(__name__)
DEMO_PATIENT = "9000000009"
SENDER, RECEIVER = "RJ1", "RRV"  # a tertiary centre and the patient's local trust (an ISA between them)


def _clinician(org: str) -> Caller:
    return Caller(org=org, role="clinician", subject=f"clinician@{org}", scopes=frozenset())


async def seed(care: Care) -> bool:
    if await care.plans.current_for(DEMO_PATIENT):
        return False
    await care.plans.create(
        examples.care_plan(DEMO_PATIENT, reason="Agreed at home visit"), _clinician(SENDER), request_id="demo"
    )
    task = await care.transfers.request(
        examples.repatriation(DEMO_PATIENT, RECEIVER), _clinician(SENDER), request_id="demo", decided=True
    )
    await care.transfers.advance(
        task["id"],
        {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "state", "valueCode": "consultant-identified"},
                {"name": "consultant", "valueString": "Dr D Orthogeriatrician, GMC 7000001"},
            ],
        },
        _clinician(RECEIVER),
        request_id="demo",
    )
    log.info("care.demo_seeded", extra={"code": "CAR031"})
    return True
