"""FHIR Subscriptions (R4B, Subscriptions Backport IG): topic-based rest-hook subscriptions to alerts.

A hospital system subscribes to the ``alert-raised`` topic with filter criteria (its MDT, optionally a
patient and a document type). Each matching alert becomes a numbered notification in the same
transaction that raised the alert, so the numbers (``eventsSinceSubscriptionStart``) have no gaps and a
receiver can tell when it missed one; ``$status`` and ``$events`` let it catch up. Delivery itself (HTTP,
signatures, retries) is in ``delivery.py``.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from services.notification.endpoints import EndpointPolicy, EndpointRefused, endpoint_parts
from services.notification.feed import next_number
from shared.fhir.errors import Code, FhirError
from shared.store import ASCENDING, Document, DocumentStore, Index, Session

log = logging.getLogger(__name__)
TOPIC = "https://lhcie.london/fhir/SubscriptionTopic/alert-raised"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
FILTER_URL = f"{BACKPORT}/backport-filter-criteria"
PAYLOAD_URL = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_URL = f"{BACKPORT}/backport-heartbeat-period"
SECRET_URL = "https://lhcie.london/fhir/StructureDefinition/subscription-signing-secret"
PAYLOADS = ("empty", "id-only", "full-resource")
FILTERS = {"recipient", "patient", "type"}
REQUESTED, ACTIVE, ERROR, OFF = "requested", "active", "error", "off"
PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
HANDSHAKE, HEARTBEAT, EVENT = "handshake", "heartbeat", "event-notification"
ENDPOINT = "Subscription.channel.endpoint"
# One text for every refused endpoint: which rule refused it (private, loopback, does not resolve...)
# would let a subscriber map the exchange's own network by trial; the log keeps the rule.
ENDPOINT_REFUSED = ("the endpoint must be an http(s) URL without credentials whose host resolves only to public "
                    "internet addresses (loopback, private, link-local, CGNAT, multicast and cloud-metadata "
                    "addresses are refused unless the exchange's webhook allow-list admits the host)")


def _ext(element: Any, url: str) -> Any:
    for ext in (element or {}).get("extension", []) if isinstance(element, dict) else []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def parse_subscription(resource: dict[str, Any], *, org: str, min_heartbeat: int = 1) -> Document:
    """Validate a posted Subscription into the stored form; FhirError (422) names each bad field.

    Only the endpoint's form is checked here; where its host resolves is ``check_endpoint``'s (I/O)."""
    problems = []
    if resource.get("criteria") != TOPIC:
        problems.append(("Subscription.criteria", f"criteria must be the topic {TOPIC}"))
    filters: dict[str, str] = {}
    for raw in [_ext(resource.get("_criteria"), FILTER_URL)] if resource.get("_criteria") else []:
        if not isinstance(raw, str):
            continue
        for key, value in parse_qsl(raw.partition("?")[2]):
            if key not in FILTERS:
                problems.append(("Subscription._criteria", f"filter {key!r} is not one of {', '.join(sorted(FILTERS))}"))
            filters[key] = value.rpartition("|")[2] if key == "patient" else value
    if not filters.get("recipient", "").startswith("CareTeam/"):
        problems.append(("Subscription._criteria", "filter criteria need recipient=CareTeam/<mdt-id>"))
    channel: dict[str, Any] = resource["channel"] if isinstance(resource.get("channel"), dict) else {}
    endpoint = channel.get("endpoint")
    scheme = urlsplit(endpoint).scheme if isinstance(endpoint, str) else ""
    if channel.get("type") != "rest-hook":
        problems.append(("Subscription.channel.type", "only rest-hook is supported"))
    try:
        endpoint_parts(endpoint)
    except EndpointRefused as refused:
        log.info("subscription.endpoint_refused rule=%s", refused.rule, extra={"code": "NOT050"})
        problems.append((ENDPOINT, ENDPOINT_REFUSED))
    payload = _ext(channel.get("_payload"), PAYLOAD_URL) or "id-only"
    if payload not in PAYLOADS:
        problems.append(("Subscription.channel._payload", f"payload content must be one of {', '.join(PAYLOADS)}"))
    if payload == "full-resource" and scheme != "https":
        problems.append(("Subscription.channel._payload", "full-resource needs an https endpoint (patient data)"))
    heartbeat = _ext(channel, HEARTBEAT_URL)
    if heartbeat is not None and (not isinstance(heartbeat, int) or isinstance(heartbeat, bool)
                                  or heartbeat < min_heartbeat):
        problems.append(("Subscription.channel.extension",
                         f"heartbeat period must be a whole number of seconds, at least {min_heartbeat}"))
    secret = _ext(resource, SECRET_URL)
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        problems.append(("Subscription.extension", "the signing secret must be at least 16 characters"))
    if problems:
        from shared.fhir.errors import Issue

        raise FhirError([Issue(Code.INVALID_RESOURCE, text, where) for where, text in problems])
    return {
        "_id": str(uuid.uuid4()), "org": org, "mdt": filters["recipient"].removeprefix("CareTeam/"),
        "filters": filters, "endpoint": endpoint, "payload": payload, "heartbeat": heartbeat,
        "secret": secret or secrets.token_urlsafe(32), "status": REQUESTED, "reason": resource.get("reason"),
        "events": 0, "last_sent": None, "error": None,
    }


async def check_endpoint(policy: EndpointPolicy, endpoint: str) -> None:
    """422 unless every address the endpoint's host resolves to may be called (see endpoints.py)."""
    try:
        await policy.check(endpoint)
    except EndpointRefused as refused:
        log.info("subscription.endpoint_refused rule=%s", refused.rule, extra={"code": "NOT050"})
        raise FhirError.of(Code.INVALID_RESOURCE, ENDPOINT_REFUSED, ENDPOINT) from None


class Subscriptions:
    def __init__(self, store: DocumentStore) -> None:
        self._subs = store.collection("subscriptions", [Index(("mdt", "status")), Index(("org",))])
        self._deliveries = store.collection(
            "deliveries", [Index(("status", "due")), Index(("subscription", "number"))])
        self._counters = store.collection("counters")

    async def create(self, doc: Document, now: str, *, session: Session, cap: int | None = None) -> None:
        if cap is not None:
            # Taking the organisation's counter serialises its concurrent creations (a compare-and-set
            # in this transaction), so two at once cannot both pass the count below.
            await next_number(self._counters, f"subscriptions-of:{doc['org']}", session=session)
            held = await self._subs.find({"org": doc["org"], "status": {"$in": [REQUESTED, ACTIVE, ERROR]}},
                                         limit=cap + 1, session=session)
            if len(held) >= cap:
                raise FhirError.of(Code.BUSINESS_RULE, f"An organisation may hold at most {cap} subscriptions; "
                                   "this one has reached that limit.", "Subscription")
        await self._subs.insert(doc, session=session)
        await self._deliveries.insert(self._delivery(doc["_id"], 0, HANDSHAKE, None, now), session=session)

    async def get(self, key: str, *, session: Session | None = None) -> Document | None:
        return await self._subs.get(key, session=session)

    async def for_org(self, org: str) -> list[Document]:
        return await self._subs.find({"org": org}, limit=1000)

    async def active_with_heartbeat(self) -> list[Document]:
        return [s for s in await self._subs.find({"status": ACTIVE}, limit=1000) if s.get("heartbeat")]

    async def set(self, key: str, changes: Document, *, session: Session | None = None) -> None:
        await self._subs.update({"_id": key}, changes, session=session)

    async def enqueue(self, alert: Document, now: str, *, session: Session) -> int:
        """Number a notification for every subscription the alert matches (no gaps: same transaction)."""
        made = 0
        for sub in await self._subs.find({"mdt": alert["mdt"], "status": {"$in": [REQUESTED, ACTIVE]}},
                                         limit=1000, session=session):
            filters = sub["filters"]
            if filters.get("patient") and filters["patient"] != alert["patient"]:
                continue
            doc_type = (alert.get("document") or {}).get("type_code")
            if filters.get("type") and filters["type"].rpartition("|")[2] != doc_type:
                continue
            number = await next_number(self._counters, f"subscription:{sub['_id']}", session=session)
            await self._subs.update({"_id": sub["_id"]}, {"events": number}, session=session)
            await self._deliveries.insert(self._delivery(sub["_id"], number, EVENT, alert["_id"], now),
                                          session=session)
            made += 1
        return made

    @staticmethod
    def _delivery(sub: str, number: int, kind: str, focus: str | None, now: str) -> Document:
        return {"_id": f"{sub}|{number:012d}", "subscription": sub, "number": number, "kind": kind,
                "focus": focus, "status": PENDING, "attempts": 0, "created": now, "due": now, "lease": None}

    async def next_for_each(self) -> list[Document]:
        """The oldest undelivered notification of each subscription (delivery is in order)."""
        rows = await self._deliveries.find({"status": {"$in": [PENDING, SENDING]}},
                                           sort=[("subscription", ASCENDING), ("number", ASCENDING)], limit=1000)
        firsts: dict[str, Document] = {}
        for row in rows:
            firsts.setdefault(row["subscription"], row)
        return list(firsts.values())

    async def claim(self, row: Document, *, now: str, lease_until: str) -> bool:
        """Take a delivery for one attempt; a lease lets another replica retake it if this one dies."""
        if row["status"] == SENDING:
            where = {"_id": row["_id"], "status": SENDING, "lease": row["lease"]}
            if (row["lease"] or "") > now:
                return False
        else:
            where = {"_id": row["_id"], "status": PENDING, "attempts": row["attempts"]}
        return await self._deliveries.update(where, {"status": SENDING, "lease": lease_until}) > 0

    async def settle(self, row: Document, changes: Document, *, session: Session) -> None:
        await self._deliveries.update({"_id": row["_id"]}, changes, session=session)

    async def events(self, sub: str, since: int, until: int) -> list[Document]:
        return await self._deliveries.find(
            {"subscription": sub, "kind": EVENT, "number": {"$gte": since, "$lte": until}},
            sort=[("number", ASCENDING)], limit=1000)


def status_resource(sub: Document, kind: str, events: list[tuple[int, str, str | None]],
                    focus_resources: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A SubscriptionStatus: the first entry of every notification bundle and the answer to $status."""
    resource: dict[str, Any] = {
        "resourceType": "SubscriptionStatus",
        "status": sub["status"],
        "type": kind,
        "eventsSinceSubscriptionStart": str(sub["events"]),
        "subscription": {"reference": f"Subscription/{sub['_id']}"},
        "topic": TOPIC,
    }
    if events:
        resource["notificationEvent"] = [
            {"eventNumber": str(number), "timestamp": at,
             **({"focus": {"reference": f"Communication/{focus}"}} if focus and sub["payload"] != "empty" else {})}
            for number, at, focus in events
        ]
    if sub.get("error"):
        resource["error"] = [{"text": sub["error"]}]
    return resource


def notification_bundle(sub: Document, kind: str, events: list[tuple[int, str, str | None]],
                        resources: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """A ``history`` Bundle: SubscriptionStatus first, then the focus per the payload content."""
    status = status_resource(sub, kind, events)
    entries: list[dict[str, Any]] = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": status,
                                      "request": {"method": "GET", "url": f"Subscription/{sub['_id']}/$status"},
                                      "response": {"status": "200"}}]
    if sub["payload"] != "empty":
        for _, _, focus in events:
            if not focus:
                continue
            entry: dict[str, Any] = {"fullUrl": f"Communication/{focus}",
                                     "request": {"method": "POST", "url": "Communication"},
                                     "response": {"status": "201"}}
            if sub["payload"] == "full-resource" and resources and focus in resources:
                entry["resource"] = resources[focus]
            entries.append(entry)
    return {"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "history",
            "timestamp": datetime.now().astimezone().isoformat(), "entry": entries}


def to_fhir(sub: Document, *, with_secret: bool = False) -> dict[str, Any]:
    filters = "&".join(f"{k}={v}" for k, v in sorted(sub["filters"].items()))
    channel: dict[str, Any] = {
        "type": "rest-hook", "endpoint": sub["endpoint"], "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": PAYLOAD_URL, "valueCode": sub["payload"]}]},
    }
    if sub.get("heartbeat"):
        channel["extension"] = [{"url": HEARTBEAT_URL, "valueUnsignedInt": sub["heartbeat"]}]
    resource: dict[str, Any] = {
        "resourceType": "Subscription", "id": sub["_id"], "status": sub["status"],
        "reason": sub.get("reason") or "MDT alerts", "criteria": TOPIC,
        "_criteria": {"extension": [{"url": FILTER_URL, "valueString": f"Communication?{filters}"}]},
        "channel": channel,
    }
    if sub.get("error"):
        resource["error"] = sub["error"]
    if with_secret:  # shown once, on creation: the receiver needs it to check signatures
        resource["extension"] = [{"url": SECRET_URL, "valueString": sub["secret"]}]
    return resource
