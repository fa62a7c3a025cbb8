"""Schemathesis over /openapi.json against a running embedded exchange (``lhcie run``): whatever it sends,
no answer is a 5xx. Shared by the bounded run (make test) and the long one (make soak)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import schemathesis

from lhcie.services import EMBEDDED_EXTRAS, SPECS
from shared import openapi
from shared.auth import EmbeddedIssuer
from tests.e2e.test_quickstart import start_lhcie_run

schemathesis.serializer.alias("application/json-patch+json", "application/json")


@schemathesis.serializer("application/pdf")
def _pdf(ctx: object, value: object) -> bytes:
    # The generated "binary" string, as the bytes of a would-be signed agreement.
    return value if isinstance(value, bytes) else str(value).encode()


# What `lhcie run` serves: the edge's own routes and every service's, sign-in included.
OPERATIONS = [*openapi.EDGE, *(op for spec in [*SPECS.values(), *EMBEDDED_EXTRAS] for op in spec.operations)]
SCHEMA = schemathesis.openapi.from_dict(openapi.document(OPERATIONS))
# Who calls what: each path is fuzzed by a caller whose scopes let the request reach its parsing.
CALLERS = [
    ("/fhir/Organization", {"org": "RJ1", "role": "dcc-admin"}),
    ("/fhir/CareTeam", {"org": "RJ1", "role": "dcc-admin"}),
    ("/fhir/Contract", {"org": "RJ1", "role": "dcc-admin"}),
    ("/fhir/Consent", {"org": "NHSLOGIN", "role": "patient", "patient": "9000000009"}),
    ("/fhir/RelatedPerson", {"org": "NHSLOGIN", "role": "patient", "patient": "9000000009"}),
    ("/fhir/EpisodeOfCare", {"org": "RJ1", "role": "mdt-coordinator", "mdt": "rj1-lung"}),
    ("/fhir/Communication", {"org": "RJ1", "role": "mdt-coordinator", "mdt": "rj1-lung"}),
    ("/alerts", {"org": "RJ1", "role": "mdt-coordinator", "mdt": "rj1-lung"}),
    ("/fhir/AuditEvent", {"org": "RJ1", "role": "auditor"}),
    ("", {"org": "RJ1", "role": "system"}),
]


@dataclass
class Exchange:
    base_url: str
    tokens: dict[str, str]
    calls: int = 0

    def headers_for(self, path: str) -> dict[str, str]:
        prefix = next(p for p, _ in CALLERS if path.startswith(p))
        return {"Authorization": f"Bearer {self.tokens[prefix]}"}


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    server, env, port = start_lhcie_run(tmp_path_factory.mktemp("fuzz"))
    try:
        issuer = EmbeddedIssuer(Path(env["LHCIE_DATA_DIR"]), issuer="lhcie-embedded", audience="lhcie")
        tokens = {prefix: issuer.mint(ttl=3600, **who) for prefix, who in CALLERS}
        running = Exchange(f"http://127.0.0.1:{port}", tokens)
        yield running
        print(f"\nAPI fuzz: {running.calls} request(s) over {len(OPERATIONS)} operations, no 5xx", file=sys.stderr)
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=60)
    # A 5xx that the client never saw (a handler crash logged after the answer) fails the run too.
    assert b"http.unhandled" not in output, output.decode()[-4000:]


def check(case: schemathesis.Case, exchange: Exchange) -> None:
    exchange.calls += 1
    response = case.call(base_url=exchange.base_url, headers=exchange.headers_for(case.path), timeout=30)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:500])
