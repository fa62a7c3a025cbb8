"""The access matrix (issue 14): every route of the embedded stack × every role, and for the routes that
show one organisation's patient data × every relationship to that patient, against ONE table of expected
answers. A route missing from the table fails, an answer that differs from the table fails, an allowed
read of patient data that leaves no audit record fails, and a refusal without ``access.denied`` fails.

Allowed means "not 401/403" (a made-up id may then be a 404, an empty body a 400/422: the caller got past
the access decision); denied means 401 or 403. The world is built once: RJ1 posts one document for the
test patient (so RJ1's lung MDT has an alert and a pathway), and the caller's organisation stands in one
relationship to RJ1 and the patient each (see ``RELATIONS``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from services.notification.subscriptions import parse_subscription
from shared.bus import QueueSpec
from shared.clock import FixedClock, stamp
from shared.events import AgreementState, AgreementStatus, Event, OrganisationState, RoutingKey
from shared.fhir.identifiers import ODS_CODE
from tests.helpers import TEST_PATIENT, eventually
from tests.unit.test_document_flow import FHIR, post_document, stored
from tests.unit.test_edge_record import Watch
from tests.unit.test_notification_alerts import entries, notification, publish
from tests.unit.test_notification_pathways import START, open_pathway
from tests.unit.test_notification_subscriptions import subscription
from tests.unit.test_policy_preferences import preferences, set_preferences

ROLES = (
    "system",
    "mdt-coordinator",
    "clinician",
    "dcc-admin",
    "auditor",
    "exchange-operator",
    "patient",
    "carer",
    "bed-manager",
    "anonymous",
)
STAFF = ("system", "mdt-coordinator", "clinician", "dcc-admin", "auditor")
CLINICAL = ("system", "mdt-coordinator", "clinician")
ADMIN = ("dcc-admin", "auditor")
PEOPLE = ("patient", "carer")
ALL = tuple(r for r in ROLES if r != "anonymous")
EVERYONE = ROLES
NOBODY: tuple[str, ...] = ()

# The caller's organisation for each relationship to RJ1's document about the test patient.
RELATIONS = {
    "own": "RJ1",
    "isa-partner": "RRV",  # demo ISA RJ1-RRV, accepted
    "no-isa": "RAL",  # the demo's organisation without an ISA
    "revoked-isa": "RF4",  # an ISA with RJ1 that RJ1 revoked
    "expired-isa": "RQM",  # an accepted ISA with RJ1 whose validity ended yesterday
    "opted-out": "RPY",  # an ISA with RJ1, but the patient opted out of RPY
}
CLINICAL_RELATIONS = {
    "own": True,
    "isa-partner": True,
    "no-isa": False,
    "revoked-isa": False,
    "expired-isa": False,
    "opted-out": False,
}
# A search is answered to everyone it is allowed to, but it shows only what the caller may see: where the
# relationship refuses, the document is left out of the Bundle (and the search is still on the record).
HIDDEN = "hidden"
# Patients and carers: the patient themself, a carer the patient authorised, and one they did not.
PERSON_RELATIONS = {"patient": True, "carer-with-grant": True, "carer-without-grant": False}
MDT = {"RJ1": "rj1-lung", "RRV": "rrv-haematology", "RPY": "rpy-breast", "RAL": "ral-colorectal"}

# What an allowed call leaves on the record, by the kind of data it shows.
READ = (RoutingKey.RECORD_READ,)
RETRIEVED = (RoutingKey.DOCUMENT_RETRIEVED,)
SEARCHED = (RoutingKey.DOCUMENT_SEARCHED, RoutingKey.RECORD_READ)
AUDIT_OWN = "audit-own"  # the audit service's own record of the use of the audit log


@dataclass(frozen=True)
class Route:
    """One row: who may call it (others are refused), whether the answer depends on the relationship to
    RJ1's patient (``relations``: the clinical roles and the people are then tried in each relationship),
    and what an allowed call leaves on the record when it shows patient data."""

    method: str
    path: str
    allow: tuple[str, ...]
    url: str = ""  # the path with ids filled in (and a query) when it differs
    body: Any = None
    relations: bool = False
    person_relations: bool = False
    filters: bool = False  # a search: a refused relationship empties the answer instead of a 403
    form: bool = False  # the parameters travel as a form body (POST _search)
    records: tuple[RoutingKey, ...] | str = ()
    note: str = ""

    def target(self, ids: dict[str, str]) -> str:
        return (self.url or self.path).format(**ids)


SEARCH_DOCS = "patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{patient}"

# THE TABLE. Ids in braces are filled from the world the fixture builds; "none" ids are made up (the call
# is then allowed to be 404 once past the access decision, so nothing in the world changes).
TABLE: tuple[Route, ...] = (
    # every service
    Route("GET", "/healthz", EVERYONE),
    Route("GET", "/readyz", EVERYONE),
    Route("GET", "/metrics", EVERYONE),
    Route("GET", "/fhir/metadata", EVERYONE),
    Route("GET", "/.well-known/jwks.json", EVERYONE),
    # intake
    Route("POST", "/fhir", ("system", "clinician"), body={}),
    Route("POST", "/fhir/DocumentReference", ("system", "clinician"), body={}),
    Route(
        "GET",
        "/fhir/DocumentReference",
        CLINICAL + PEOPLE,
        url="/fhir/DocumentReference?" + SEARCH_DOCS,
        relations=True,
        person_relations=True,
        filters=True,
        records=SEARCHED,
    ),
    Route(
        "POST",
        "/fhir/DocumentReference/_search",
        CLINICAL + PEOPLE,
        url="/fhir/DocumentReference/_search",
        body=SEARCH_DOCS,
        form=True,
        relations=True,
        person_relations=True,
        filters=True,
        records=SEARCHED,
    ),
    Route(
        "GET",
        "/fhir/DocumentReference/{id}",
        CLINICAL,
        url="/fhir/DocumentReference/{document}",
        relations=True,
        person_relations=True,
        records=READ,
    ),
    Route("PATCH", "/fhir/DocumentReference/{id}", ("system",), url="/fhir/DocumentReference/none", body=[]),
    Route(
        "GET",
        "/fhir/DocumentReference/{id}/_history",
        CLINICAL,
        url="/fhir/DocumentReference/{document}/_history",
        relations=True,
        person_relations=True,
        records=READ,
    ),
    Route(
        "GET",
        "/fhir/DocumentReference/{id}/_history/{vid}",
        CLINICAL,
        url="/fhir/DocumentReference/{document}/_history/1",
        relations=True,
        person_relations=True,
        records=READ,
    ),
    Route(
        "GET",
        "/fhir/List/{id}",
        CLINICAL + PEOPLE,
        url="/fhir/List/none",
        note="an ITI-65 SubmissionSet or Folder, answered to the submitting organisation only (404 to any other)",
    ),
    Route(
        "GET",
        "/fhir/Patient/{id}",
        CLINICAL + PEOPLE,
        url="/fhir/Patient/none",
        note="the patient an ITI-65 Patient entry matched, answered to the submitting organisation only",
    ),
    Route(
        "GET",
        "/fhir/ValueSet/{id}",
        EVERYONE,
        url="/fhir/ValueSet/lhcie-document-types",
        note="terminology: the accepted document types",
    ),
    Route(
        "GET",
        "/fhir/_bundle/{id}",
        ALL,
        url="/fhir/_bundle/none",
        note="a submission's state, answered to the submitting organisation only (404 to any other)",
    ),
    # storage
    Route(
        "GET",
        "/fhir/Binary/{id}",
        CLINICAL,
        url="/fhir/Binary/{document}",
        relations=True,
        person_relations=True,
        records=RETRIEVED,
    ),
    # notification: alerts and pathways are the caller's own MDT's (the claim checked against the organisation)
    Route(
        "GET",
        "/fhir/Communication",
        ("mdt-coordinator",),
        url="/fhir/Communication?recipient=CareTeam/rj1-lung",
        records=READ,
    ),
    Route("POST", "/fhir/Communication/$reconcile", ("exchange-operator",)),
    Route(
        "POST",
        "/fhir/Communication/{id}/$acknowledge",
        ("mdt-coordinator",),
        url="/fhir/Communication/{alert}/$acknowledge",
    ),
    Route("POST", "/alerts/stream-token", ("mdt-coordinator",), url="/alerts/stream-token?team=CareTeam/rj1-lung"),
    Route("GET", "/alerts/stream", NOBODY, url="/alerts/stream?token=forged", note="its own stream token only"),
    Route("GET", "/console/", EVERYONE, note="a static page; its data needs a token"),
    Route("GET", "/console/static", EVERYONE, url="/console/static/console.js"),
    Route("GET", "/console/static/session.js", EVERYONE, note="the pages' shared sign-in script: no data"),
    Route(
        "GET",
        "/fhir/EpisodeOfCare",
        ("mdt-coordinator",),
        url="/fhir/EpisodeOfCare?team=CareTeam/rj1-lung",
        records=READ,
    ),
    Route("POST", "/fhir/EpisodeOfCare", ("mdt-coordinator",), body={}),
    Route(
        "GET",
        "/fhir/EpisodeOfCare/$tracking-list",
        ("mdt-coordinator",),
        url="/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/rj1-lung",
        records=READ,
    ),
    Route("GET", "/fhir/EpisodeOfCare/{id}", ("mdt-coordinator",), url="/fhir/EpisodeOfCare/{pathway}", records=READ),
    Route(
        "POST",
        "/fhir/EpisodeOfCare/{id}/$record-event",
        ("mdt-coordinator",),
        url="/fhir/EpisodeOfCare/{pathway}/$record-event",
        body={},
    ),
    Route(
        "POST",
        "/fhir/EpisodeOfCare/{id}/$transfer",
        ("mdt-coordinator",),
        url="/fhir/EpisodeOfCare/{pathway}/$transfer",
        body={},
    ),
    Route("POST", "/fhir/Subscription", ("system",), body={}),
    Route("GET", "/fhir/Subscription/{id}", ("system",), url="/fhir/Subscription/{subscription}"),
    Route("GET", "/fhir/Subscription/{id}/$status", ("system",), url="/fhir/Subscription/{subscription}/$status"),
    Route("GET", "/fhir/Subscription/{id}/$events", ("system",), url="/fhir/Subscription/{subscription}/$events"),
    Route(
        "GET",
        "/fhir/Subscription/{id}/$stream",
        ("system",),
        url="/fhir/Subscription/{subscription}/$stream",
        note="the SSE channel of a care plan subscription; this one is rest-hook (422 once past the access check)",
    ),
    # audit
    Route(
        "GET",
        "/fhir/AuditEvent",
        (*ADMIN, "exchange-operator"),
        url="/fhir/AuditEvent?" + SEARCH_DOCS,
        records=AUDIT_OWN,
    ),
    Route("GET", "/fhir/AuditEvent/$verify", ("system", "dcc-admin", "auditor", "exchange-operator")),
    Route(
        "GET",
        "/fhir/AuditEvent/$export",
        (*ADMIN, "exchange-operator"),
        url="/fhir/AuditEvent/$export?start=2000-01-01&end=2100-01-01",
        records=AUDIT_OWN,
    ),
    Route(
        "GET",
        "/fhir/AuditEvent/$access-report",
        PEOPLE,
        url="/fhir/AuditEvent/$access-report?patient={patient}",
        person_relations=True,
        records=AUDIT_OWN,
    ),
    # agreements: the directory is for staff; agreements for their parties' admins
    Route("GET", "/fhir/Organization", (*STAFF, "exchange-operator", "bed-manager")),
    Route("GET", "/fhir/Organization/{id}", (*STAFF, "exchange-operator", "bed-manager"), url="/fhir/Organization/RJ1"),
    Route("POST", "/fhir/Organization", ("dcc-admin",), body={}),
    Route("PUT", "/fhir/Organization/{id}", ("dcc-admin",), url="/fhir/Organization/none", body={}),
    Route(
        "GET",
        "/fhir/Organization/$record-holders",
        PEOPLE,
        url="/fhir/Organization/$record-holders?patient={patient}",
        person_relations=True,
        records=READ,
    ),
    Route("GET", "/fhir/CareTeam", ("system", "mdt-coordinator", "clinician", "dcc-admin", "exchange-operator")),
    Route(
        "GET",
        "/fhir/CareTeam/{id}",
        ("system", "mdt-coordinator", "clinician", "dcc-admin", "exchange-operator"),
        url="/fhir/CareTeam/rj1-lung",
    ),
    Route("POST", "/fhir/CareTeam", ("dcc-admin",), body={}),
    Route("PUT", "/fhir/CareTeam/{id}", ("dcc-admin",), url="/fhir/CareTeam/none", body={}),
    Route("GET", "/fhir/Contract", ("system", "dcc-admin", "exchange-operator")),
    Route("GET", "/fhir/Contract/{id}", ("system", "dcc-admin", "exchange-operator"), url="/fhir/Contract/isa-rj1-rrv"),
    Route("POST", "/fhir/Contract", ("dcc-admin",), body={}),
    Route("GET", "/fhir/Contract/$pending", ("system", "dcc-admin", "exchange-operator")),
    Route("GET", "/fhir/Contract/$templates", ("system", "dcc-admin", "exchange-operator")),
    Route("GET", "/fhir/Contract/$duplicates", ("system", "dcc-admin", "exchange-operator")),
    Route("POST", "/fhir/Contract/$merge", ("dcc-admin",), body={}),
    Route("POST", "/fhir/Contract/{id}/$accept", ("dcc-admin",), url="/fhir/Contract/none/$accept", body={}),
    Route("POST", "/fhir/Contract/{id}/$reject", ("dcc-admin",), url="/fhir/Contract/none/$reject", body={}),
    Route("POST", "/fhir/Contract/{id}/$revoke", ("dcc-admin",), url="/fhir/Contract/none/$revoke", body={}),
    Route("POST", "/fhir/Contract/{id}/$join", ("dcc-admin",), url="/fhir/Contract/none/$join", body={}),
    Route(
        "POST", "/fhir/Contract/{id}/$approve-join", ("dcc-admin",), url="/fhir/Contract/none/$approve-join", body={}
    ),
    Route("POST", "/fhir/Contract/{id}/$reject-join", ("dcc-admin",), url="/fhir/Contract/none/$reject-join", body={}),
    Route("POST", "/fhir/Contract/{id}/$retire", ("dcc-admin",), url="/fhir/Contract/none/$retire", body={}),
    Route("PUT", "/fhir/Contract/{id}/$document", ("dcc-admin",), url="/fhir/Contract/none/$document", body={}),
    Route(
        "GET",
        "/fhir/Contract/{id}/$document",
        ("system", "dcc-admin", "exchange-operator"),
        url="/fhir/Contract/isa-rj1-rrv/$document",
    ),
    Route("GET", "/fhir/Consent", PEOPLE, url="/fhir/Consent?patient={patient}", person_relations=True, records=READ),
    Route(
        "GET",
        "/fhir/Consent/preferences",
        PEOPLE,
        url="/fhir/Consent/preferences?patient={patient}",
        person_relations=True,
        records=READ,
    ),
    Route("PUT", "/fhir/Consent/preferences", ("patient",), body={}),
    Route(
        "GET",
        "/fhir/RelatedPerson",
        PEOPLE,
        url="/fhir/RelatedPerson?patient={patient}",
        person_relations=True,
        records=READ,
    ),
    Route("POST", "/fhir/RelatedPerson", ("patient",), body={}),
    Route("POST", "/fhir/RelatedPerson/{id}/$revoke", ("patient",), url="/fhir/RelatedPerson/none/$revoke", body={}),
    # care: end-of-life plans (a patient may start a draft of their own), repatriation transfers and discharge
    # summaries between clinical systems; the reads of another organisation's record are the sharing policy's
    # decision with the token's purpose of use, tested in tests/unit/test_care_*.py (no care record in this world)
    Route("POST", "/fhir/CarePlan", ("system", "clinician", "patient"), body={}),
    Route(
        "GET",
        "/fhir/CarePlan",
        ("system", "clinician", "patient"),
        url="/fhir/CarePlan?patient.identifier=https://fhir.nhs.uk/Id/nhs-number|{patient}&category=end-of-life",
        records=READ,
    ),
    Route("GET", "/fhir/CarePlan/{id}", ("system", "clinician", "patient"), url="/fhir/CarePlan/none"),
    Route("PUT", "/fhir/CarePlan/{id}", ("system", "clinician", "patient"), url="/fhir/CarePlan/none", body={}),
    Route(
        "GET", "/fhir/CarePlan/{id}/_history", ("system", "clinician", "patient"), url="/fhir/CarePlan/none/_history"
    ),
    Route(
        "GET",
        "/fhir/CarePlan/{id}/_history/{vid}",
        ("system", "clinician", "patient"),
        url="/fhir/CarePlan/none/_history/1",
    ),
    Route("POST", "/fhir/Task", ("system", "clinician"), body={}),
    # A trust's bed managers read the transfers coming in (tests/unit/test_transfer_alerts.py: their alerts,
    # recipient=Organization/<ODS>, which no other role and no other trust's bed managers may search).
    Route("GET", "/fhir/Task", ("system", "clinician", "bed-manager"), url="/fhir/Task?owner=RJ1", records=READ),
    Route("GET", "/fhir/Task/{id}", ("system", "clinician", "bed-manager"), url="/fhir/Task/none"),
    Route("POST", "/fhir/Task/{id}/$advance", ("system", "clinician"), url="/fhir/Task/none/$advance", body={}),
    Route("POST", "/fhir/Bundle", ("system", "clinician"), body={}),
    Route("GET", "/fhir/Bundle", ("system", "clinician"), url="/fhir/Bundle?recipient=RJ1", records=READ),
    Route("GET", "/fhir/Bundle/{id}", ("system", "clinician"), url="/fhir/Bundle/none"),
    Route(
        "POST", "/fhir/Bundle/{id}/$acknowledge", ("system", "clinician"), url="/fhir/Bundle/none/$acknowledge", body={}
    ),
    Route("GET", "/fhir/Bundle/{id}/$status", ("system", "clinician"), url="/fhir/Bundle/none/$status"),
    Route("GET", "/fhir/Questionnaire", ALL, note="the published blank forms: no patient data"),
    Route("GET", "/fhir/Questionnaire/{id}", ALL, url="/fhir/Questionnaire/none"),
    Route("GET", "/care/plan/", EVERYONE, note="a static page; its data needs a token"),
    Route("GET", "/care/transfers/", EVERYONE, note="a static page; its data needs a token"),
    Route("GET", "/openapi.json", EVERYONE, note="the API's description: no data"),
    Route("GET", "/dcc/", EVERYONE, note="a static page; its data needs a token"),
    Route("GET", "/patient/", EVERYONE, note="a static page; its data needs a token"),
    Route("GET", "/dcc/static", EVERYONE, url="/dcc/static/dcc.js"),
    Route("GET", "/patient/static", EVERYONE, url="/patient/static/patient.js"),
    Route("GET", "/dcc/static/vocabulary.json", EVERYONE, note="words for codes: no data"),
    Route("GET", "/patient/static/vocabulary.json", EVERYONE, note="words for codes: no data"),
    Route("GET", "/dcc/static/session.js", EVERYONE, note="the pages' shared sign-in script: no data"),
    Route("GET", "/patient/static/session.js", EVERYONE, note="the pages' shared sign-in script: no data"),
)


@dataclass
class Cell:
    route: Route
    role: str
    relation: str
    allowed: bool | str  # True, False, or HIDDEN (answered, without the document)
    status: int = 0
    correlation_id: str = ""
    problems: list[str] = field(default_factory=list)

    def name(self) -> str:
        return f"{self.route.method} {self.route.path} as {self.role} ({self.relation})"


def cells() -> list[Cell]:
    """The table expanded: each route × each role, and × each relationship where the route has one."""

    def expected(route: Route, allowed: bool, related: bool) -> bool | str:
        if allowed and not related:
            return HIDDEN if route.filters else False
        return allowed

    out = []
    for route in TABLE:
        for role in ROLES:
            allowed = role in route.allow
            if route.relations and role in CLINICAL:
                out += [Cell(route, role, rel, expected(route, allowed, ok)) for rel, ok in CLINICAL_RELATIONS.items()]
            elif route.person_relations and role == "carer":
                out += [
                    Cell(route, role, rel, expected(route, allowed, PERSON_RELATIONS[rel]))
                    for rel in ("carer-with-grant", "carer-without-grant")
                ]
            else:
                out.append(Cell(route, role, "own" if role not in PEOPLE else role, allowed))
        if route.filters:
            # Patients see which organisations hold their records (the patient view), not the documents:
            # their search is answered, empty.
            out = [
                Cell(c.route, c.role, c.relation, HIDDEN) if c.route is route and c.role in PEOPLE and c.allowed else c
                for c in out
            ]
    return out


def headers_for(tokens: Any, role: str, relation: str) -> dict[str, str]:
    if role == "anonymous":
        return {}
    if role in PEOPLE:
        subject = "someone-else@NHSLOGIN" if relation == "carer-without-grant" else None
        return tokens.headers("NHSLOGIN", role, patient=TEST_PATIENT, subject=subject)
    if role == "exchange-operator":
        return tokens.headers("LHCIE", role)
    org = RELATIONS.get(relation, "RJ1")
    return tokens.headers(org, role, mdt=MDT.get(org) if role == "mdt-coordinator" else None)


WATCHED = (
    RoutingKey.ACCESS_DENIED,
    RoutingKey.RECORD_READ,
    RoutingKey.DOCUMENT_RETRIEVED,
    RoutingKey.DOCUMENT_SEARCHED,
)


def route_keys(app: Any) -> set[tuple[str, str]]:
    keys = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info()
        keys.add((route.method, info.get("path") or info.get("formatter") or info.get("prefix")))
    return keys


async def test_every_route_of_the_stack_is_in_the_table(stack: TestClient) -> None:
    served = route_keys(stack.server.app)
    table = {(r.method, r.path) for r in TABLE}
    assert len(table) == len(TABLE), "a route is in the table twice"
    assert sorted(served - table) == [], "routes the access matrix does not cover: add them to TABLE"
    assert sorted(table - served) == [], "rows for routes that no longer exist"


async def _agreement(stack: TestClient, org: str, status: AgreementStatus, valid_to: datetime, key: RoutingKey) -> None:
    await publish(
        stack,
        Event.new(
            RoutingKey.POLICY_ORGANISATION_UPDATED,
            OrganisationState(ods_code=org, name=f"Trust {org}", kind="acute-trust", version=1),
            source="test",
        ),
    )
    await publish(
        stack,
        Event.new(
            key,
            AgreementState(
                agreement_id=f"isa-rj1-{org.lower()}",
                title=f"ISA RJ1-{org}",
                parties=("RJ1", org),
                purposes=("cancer-care",),
                status=status,
                valid_from=datetime(2026, 1, 1, tzinfo=UTC),
                valid_to=valid_to,
                accepted_by=("RJ1", org),
                version=2,
            ),
            source="test",
        ),
    )


async def build_world(stack: TestClient, tokens: Any) -> dict[str, str]:
    pathway = await open_pathway(stack, tokens, FixedClock(START + timedelta(days=5)))
    notification(stack).set_clock(FixedClock(datetime.now(UTC)))
    document = await post_document(stack, tokens)
    await eventually(lambda: stored(stack, tokens, document))
    now = datetime.now(UTC)
    await _agreement(
        stack, "RF4", AgreementStatus.REVOKED, now + timedelta(days=365), RoutingKey.POLICY_AGREEMENT_REVOKED
    )
    await _agreement(
        stack, "RQM", AgreementStatus.ACCEPTED, now - timedelta(days=1), RoutingKey.POLICY_AGREEMENT_ACCEPTED
    )
    await set_preferences(
        stack,
        tokens,
        preferences(
            {
                "type": "deny",
                "actor": [
                    {"role": {"text": "recipient"}, "reference": {"identifier": {"system": ODS_CODE, "value": "RPY"}}}
                ],
            }
        ),
    )

    async def alert_raised() -> bool:
        response = await stack.get(
            "/fhir/Communication?recipient=CareTeam/rj1-lung",
            headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"),
        )
        return bool(entries(await response.json()))

    await eventually(alert_raised)
    response = await stack.get(
        "/fhir/Communication?recipient=CareTeam/rj1-lung",
        headers=tokens.headers("RJ1", "mdt-coordinator", mdt="rj1-lung"),
    )
    alert = entries(await response.json())[0]["id"]
    return {
        "document": document,
        "pathway": pathway["id"],
        "patient": TEST_PATIENT,
        "alert": alert,
        "subscription": await _subscription(stack),
    }


async def _subscription(stack: TestClient) -> str:
    """RJ1's system subscribed to its lung MDT's alerts in full (stored directly: a receiver that resolves
    to a public address is not needed, nothing is delivered before the matrix ends)."""
    n = notification(stack)
    doc = parse_subscription(subscription("https://receiver.invalid/hook", payload="full-resource"), org="RJ1")
    async with n.ctx.store.transaction() as session:
        await n.subscriptions.create(doc, stamp(n.clock.now()), session=session)
    return str(doc["_id"])


async def _audit_has(stack: TestClient, tokens: Any, correlation_id: str) -> bool:
    response = await stack.get(
        f"/fhir/AuditEvent?request-id={correlation_id}", headers=tokens.headers("LHCIE", "exchange-operator")
    )
    return bool(entries(await response.json()))


async def test_the_access_matrix(stack: TestClient, tokens: Any) -> None:
    ids = await build_world(stack, tokens)
    watch = Watch(stack)
    watch.queue = QueueSpec("test.matrix", WATCHED)
    await watch.start()
    all_cells = cells()
    for cell in all_cells:
        route = cell.route
        headers = headers_for(tokens, cell.role, cell.relation)
        kwargs: dict[str, Any] = {"headers": headers}
        if route.form:
            kwargs["data"] = route.body.format(**ids)
            kwargs["headers"] = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        elif route.body is not None:
            kwargs["data"] = json.dumps(route.body)
            kwargs["headers"] = {**headers, **FHIR}
        response = await stack.request(route.method, route.target(ids), **kwargs)
        body = await response.read()
        cell.status = response.status
        cell.correlation_id = response.headers.get("X-Correlation-Id", "")
        refused = response.status in (401, 403)
        if response.status >= 500:
            cell.problems.append(f"answered {response.status}")
        elif cell.allowed == HIDDEN:
            if not refused and (response.status != 200 or json.loads(body).get("entry")):
                cell.problems.append(f"expected nothing shown, answered {response.status} {body[:200]!r}")
        elif refused == cell.allowed:
            cell.problems.append(f"expected {'allow' if cell.allowed else 'deny'}, answered {response.status}")
    for ctx in watch.contexts:
        await ctx.outbox.flush()
    events = await watch.drain()
    by_request: dict[str, set[str]] = {}
    for event in events:
        by_request.setdefault(event.correlationid or "", set()).add(event.type)
    for cell in all_cells:
        seen = by_request.get(cell.correlation_id, set())
        if cell.problems:
            continue
        if cell.status in (401, 403):
            if RoutingKey.ACCESS_DENIED not in seen and not await _audit_has(stack, tokens, cell.correlation_id):
                cell.problems.append("refused without an access.denied record")
        elif cell.role == "patient" and not cell.route.relations:
            continue  # the patient reading about themself discloses nothing to anyone else
        elif cell.route.records == AUDIT_OWN:
            if not await _audit_has(stack, tokens, cell.correlation_id):
                cell.problems.append("the audit service kept no record of this use")
        elif cell.route.records and cell.status == 200 and not seen & set(cell.route.records):
            cell.problems.append(
                f"allowed read of patient data left none of {[k.value for k in cell.route.records]}"
                f" (only {sorted(seen)})"
            )
    if path := os.environ.get("LHCIE_MATRIX_DUMP"):
        with open(path, "w") as f:
            for cell in all_cells:
                f.write(f"{cell.status} {cell.allowed} {cell.name()} {cell.problems}\n")
    wrong = [f"{cell.name()}: {'; '.join(cell.problems)}" for cell in all_cells if cell.problems]
    assert wrong == [], f"{len(wrong)} of {len(all_cells)} cells differ:\n" + "\n".join(wrong)
