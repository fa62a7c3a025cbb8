"""Bad input to the care endpoints is an OperationOutcome with a 4xx status, never a 500: valid examples
with one value at a time replaced by values of the wrong shape."""

from __future__ import annotations

import copy
import random
from collections.abc import Iterator
from typing import Any

from aiohttp.test_utils import TestClient

from services.care import examples
from tests.unit.care_support import PATIENT, call, care_stack  # noqa: F401

WRONG = ([], {}, "x", 7, None, [[]], [{}], {"a": []}, True)


def paths(value: Any, here: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield here
    if isinstance(value, dict):
        for k, v in value.items():
            yield from paths(v, (*here, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*here, i))


def mutants(resource: dict[str, Any], n: int, seed: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    every = [p for p in paths(resource) if p]
    for _ in range(n):
        path = rng.choice(every)
        mutant = copy.deepcopy(resource)
        target = mutant
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = copy.deepcopy(rng.choice(WRONG))
        yield mutant


async def test_wrong_shapes_never_cause_a_500(care_stack: TestClient, tokens: Any) -> None:
    status, task, _ = await call(care_stack, tokens, "POST", "/fhir/Task", "RJ1", examples.repatriation(PATIENT, "RRV"))
    assert status == 201
    status, summary, _ = await call(
        care_stack,
        tokens,
        "POST",
        "/fhir/Bundle",
        "RJ1",
        examples.discharge_summary(PATIENT, identifier="fuzz-0", gp="G85001"),
    )
    assert status == 201
    cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("POST", "/fhir/CarePlan", "RJ1", examples.care_plan(PATIENT)),
        ("POST", "/fhir/Task", "RJ1", examples.repatriation(PATIENT, "RRV")),
        (
            "POST",
            "/fhir/Bundle",
            "RJ1",
            examples.discharge_summary(PATIENT, identifier="fuzz-1", gp="G85001", trust="RRV", replaces="fuzz-0"),
        ),
        (
            "POST",
            f"/fhir/Task/{task['id']}/$advance",
            "RRV",
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "state", "valueCode": "consultant-identified"},
                    {"name": "consultant", "valueString": "Dr X"},
                ],
            },
        ),
        (
            "POST",
            f"/fhir/Bundle/{summary['id']}/$acknowledge",
            "G85001",
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "type", "valueCode": "business"},
                    {"name": "code", "valueCode": "patient-known"},
                ],
            },
        ),
    ]
    for seed, (method, path, org, valid) in enumerate(cases):
        for mutant in mutants(valid, 60, seed):
            status, body, _ = await call(care_stack, tokens, method, path, org, mutant)
            assert status < 500, (path, mutant, body)
            if status >= 400:
                assert body["resourceType"] == "OperationOutcome"
