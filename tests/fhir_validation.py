"""Every FHIR resource an MHD test receives is checked by an R4 validator that is not fhir.resources:
Medplum's (tests/fhir_validator/validate.mjs, installed by ``make install`` from its own lock), kept running
for the session. A test module opts in with ``pytestmark = pytest.mark.usefixtures("validated_answers")``."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

HERE = Path(__file__).parent / "fhir_validator"


class Validator:
    def __init__(self) -> None:
        if not (HERE / "node_modules" / "@medplum" / "core").exists():
            raise RuntimeError("the FHIR validator is not installed: run make install (npm ci in tests/fhir_validator)")
        self._process = subprocess.Popen(
            ["node", str(HERE / "validate.mjs")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE
        )
        self._lock = threading.Lock()

    def errors(self, resource: dict[str, Any]) -> list[str]:
        assert self._process.stdin and self._process.stdout
        with self._lock:
            self._process.stdin.write(json.dumps(resource) + "\n")
            self._process.stdin.flush()
            answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError("the FHIR validator stopped")
        return list(json.loads(answer)["errors"])

    def close(self) -> None:
        if self._process.stdin:
            self._process.stdin.close()
        self._process.wait(timeout=10)
        if self._process.stdout:
            self._process.stdout.close()


@pytest.fixture(scope="session")
def fhir_validator() -> Iterator[Validator]:
    validator = Validator()
    yield validator
    validator.close()


@pytest.fixture
def validated_answers(fhir_validator: Validator, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Validate each FHIR JSON body a test reads with ``response.json()``; fail the test on any error."""
    problems: list[str] = []
    checked: list[int] = []
    original = aiohttp.ClientResponse.json

    async def json_and_validate(self: aiohttp.ClientResponse, *args: Any, **kwargs: Any) -> Any:
        body = await original(self, *args, **kwargs)
        if self.content_type == "application/fhir+json" and isinstance(body, dict) and "resourceType" in body:
            checked.append(1)
            problems.extend(f"{self.method} {self.url.path}: {e}" for e in fhir_validator.errors(body))
        return body

    monkeypatch.setattr(aiohttp.ClientResponse, "json", json_and_validate)
    yield problems
    assert not problems, "\n".join(problems)
