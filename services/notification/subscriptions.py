"""FHIR Subscriptions (Subscriptions Backport IG, R4 form): topic-based subscriptions to alerts and to
end-of-life care plan changes.

A hospital system subscribes to the ``alert-raised`` topic with filter criteria (its MDT, optionally a
patient and a document type), or to the ``careplan-changed`` topic (optionally one patient). Each match
becomes a numbered notification in the same transaction that raised the alert (or took in the plan's
change), so the numbers (``events-since-subscription-start``) have no gaps and a receiver can tell when it
missed one; ``$status`` and ``$events`` let it catch up. Delivery itself (HTTP, signatures, retries) is in
``delivery.py``; a subscription on the server-sent-events channel reads its notifications on its own
connection instead (``$stream``).

The exchange declares FHIR 4.0.1, so the status is the IG's R4 form: a ``Parameters`` resource
(backport-subscription-status-r4), not R4B's ``SubscriptionStatus``.
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
# A new version of an end-of-life care plan that others may see (never a draft): the GP, hospice and
# ambulance service hear of it and read the plan from the care service (a read that is audited).
CAREPLAN_TOPIC = "https://lhcie.london/fhir/SubscriptionTopic/careplan-changed"
TOPICS = (TOPIC, CAREPLAN_TOPIC)
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
STATUS_PROFILE = f"{BACKPORT}/backport-subscription-status-r4"
NOTIFICATION_PROFILE = f"{BACKPORT}/backport-subscription-notification-r4"
CHANNEL_TYPE_URL = f"{BACKPORT}/backport-channel-type"
# The exchange's own channel: the subscriber keeps a server-sent-events connection open ($stream).
CHANNEL_SYSTEM = "https://lhcie.london/fhir/CodeSystem/subscription-channel-type"
SSE = "sse"
FILTER_URL = f"{BACKPORT}/backport-filter-criteria"
PAYLOAD_URL = f"{BACKPORT}/backport-payload-content"
HEARTBEAT_URL = f"{BACKPORT}/backport-heartbeat-period"
SECRET_URL = "https://lhcie.london/fhir/StructureDefinition/subscription-signing-secret"
PAYLOADS = ("empty", "id-only", "full-resource")
FILTERS = {"recipient", "patient", "type"}
CAREPLAN_FILTERS = {"patient"}
REQUESTED, ACTIVE, ERROR, OFF = "requested", "active", "error", "off"
# STREAMED: a notification of an SSE subscription, read from the store by its stream, never POSTed.
PENDING, SENDING, DELIVERED, FAILED, STREAMED = "pending", "sending", "delivered", "failed", "streamed"
HANDSHAKE, HEARTBEAT, EVENT = "handshake", "heartbeat", "event-notification"
ENDPOINT = "Subscription.channel.endpoint"
# One text for every refused endpoint: which rule refused it (private, loopback, does not resolve...)
# would let a subscriber map the exchange's own network by trial; the log keeps the rule.
ENDPOINT_REFUSED = (
    "the endpoint must be an http(s) URL without credentials whose host resolves only to public "
    "internet addresses (loopback, private, link-local, CGNAT, multicast and cloud-metadata "
    "addresses are refused unless the exchange's webhook allow-list admits the host)"
)


def _ext(element: Any, url: str) -> Any:
    for ext in (element or {}).get("extension", []) if isinstance(element, dict) else []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return next((v for k, v in ext.items() if k.startswith("value")), None)
    return None


def _channel_type(channel: dict[str, Any]) -> str:
    """``rest-hook``, or ``sse`` when the backport channel-type extension names the exchange's SSE channel."""
    coding = _ext(channel.get("_type"), CHANNEL_TYPE_URL)
    if isinstance(coding, dict) and coding.get("system") == CHANNEL_SYSTEM and coding.get("code") == SSE:
        return SSE
    return str(channel.get("type"))


def parse_subscription(resource: dict[str, Any], *, org: str, min_heartbeat: int = 1) -> Document:
    """Validate a posted Subscription into the stored form; FhirError (422) names each bad field.

    Only the endpoint's form is checked here; where its host resolves is ``check_endpoint``'s (I/O)."""
    problems = []
    topic = resource.get("criteria")
    if topic not in TOPICS:
        problems.append(("Subscription.criteria", f"criteria must be one of the topics {', '.join(TOPICS)}"))
    allowed = CAREPLAN_FILTERS if topic == CAREPLAN_TOPIC else FILTERS
    filters: dict[str, str] = {}
    for raw in [_ext(resource.get("_criteria"), FILTER_URL)] if resource.get("_criteria") else []:
        if not isinstance(raw, str):
            continue
        for key, value in parse_qsl(raw.partition("?")[2]):
            if key not in allowed:
                problems.append(
                    ("Subscription._criteria", f"filter {key!r} is not one of {', '.join(sorted(allowed))}")
                )
            filters[key] = value.rpartition("|")[2] if key == "patient" else value
    if topic != CAREPLAN_TOPIC and not filters.get("recipient", "").startswith("CareTeam/"):
        problems.append(("Subscription._criteria", "filter criteria need recipient=CareTeam/<mdt-id>"))
    channel: dict[str, Any] = resource["channel"] if isinstance(resource.get("channel"), dict) else {}
    kind = _channel_type(channel)
    endpoint = channel.get("endpoint") if kind != SSE else None
    scheme = urlsplit(endpoint).scheme if isinstance(endpoint, str) else ""
    if kind not in ("rest-hook", SSE):
        problems.append(
            (
                "Subscription.channel.type",
                f"only rest-hook and the {CHANNEL_SYSTEM}|{SSE} channel (backport-channel-type) are supported",
            )
        )
    if kind == SSE and topic != CAREPLAN_TOPIC:
        problems.append(
            (
                "Subscription.channel.type",
                "MDT alerts stream to consoles (/alerts/stream); the SSE channel is for the careplan-changed topic",
            )
        )
    if kind == "rest-hook":
        try:
            endpoint_parts(endpoint)
        except EndpointRefused as refused:
            log.info("subscription.endpoint_refused rule=%s", refused.rule, extra={"code": "NOT050"})
            problems.append((ENDPOINT, ENDPOINT_REFUSED))
    payload = _ext(channel.get("_payload"), PAYLOAD_URL) or "id-only"
    if payload not in PAYLOADS:
        problems.append(("Subscription.channel._payload", f"payload content must be one of {', '.join(PAYLOADS)}"))
    if payload == "full-resource" and topic == CAREPLAN_TOPIC:
        # The plan is read from the care service, so that every view of it is audited and counted.
        problems.append(
            (
                "Subscription.channel._payload",
                "care plan notifications are id-only or empty: read the plan from /fhir/CarePlan",
            )
        )
    elif payload == "full-resource" and scheme != "https":
        problems.append(("Subscription.channel._payload", "full-resource needs an https endpoint (patient data)"))
    heartbeat = _ext(channel, HEARTBEAT_URL)
    if heartbeat is not None and (
        not isinstance(heartbeat, int) or isinstance(heartbeat, bool) or heartbeat < min_heartbeat
    ):
        problems.append(
            (
                "Subscription.channel.extension",
                f"heartbeat period must be a whole number of seconds, at least {min_heartbeat}",
            )
        )
    secret = _ext(resource, SECRET_URL)
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        problems.append(("Subscription.extension", "the signing secret must be at least 16 characters"))
    if problems:
        from shared.fhir.errors import Issue

        raise FhirError([Issue(Code.INVALID_RESOURCE, text, where) for where, text in problems])
    recipient = filters.get("recipient", "")
    return {
        "_id": str(uuid.uuid4()),
        "org": org,
        "topic": topic,
        "channel": kind,
        # Care plan subscriptions have no MDT: they are found by topic.
        "mdt": recipient.removeprefix("CareTeam/") if topic == TOPIC else None,
        "filters": filters,
        "endpoint": endpoint,
        "payload": payload,
        "heartbeat": heartbeat if kind != SSE else None,
        "secret": secret or secrets.token_urlsafe(32),
        # An SSE subscription has no handshake to wait for: it is active once made.
        "status": ACTIVE if kind == SSE else REQUESTED,
        "reason": resource.get("reason"),
        "events": 0,
        "last_sent": None,
        "error": None,
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
        self._subs = store.collection(
            "subscriptions", [Index(("mdt", "status")), Index(("org",)), Index(("topic", "status"))]
        )
        self._deliveries = store.collection("deliveries", [Index(("status", "due")), Index(("subscription", "number"))])
        self._counters = store.collection("counters")

    async def create(self, doc: Document, now: str, *, session: Session, cap: int | None = None) -> None:
        if cap is not None:
            # Taking the organisation's counter serialises its concurrent creations (a compare-and-set
            # in this transaction), so two at once cannot both pass the count below.
            await next_number(self._counters, f"subscriptions-of:{doc['org']}", session=session)
            held = await self._subs.find(
                {"org": doc["org"], "status": {"$in": [REQUESTED, ACTIVE, ERROR]}}, limit=cap + 1, session=session
            )
            if len(held) >= cap:
                raise FhirError.of(
                    Code.BUSINESS_RULE,
                    f"An organisation may hold at most {cap} subscriptions; this one has reached that limit.",
                    "Subscription",
                )
        await self._subs.insert(doc, session=session)
        if doc.get("channel") != SSE:
            await self._deliveries.insert(self._delivery(doc["_id"], 0, HANDSHAKE, None, now), session=session)

    async def get(self, key: str, *, session: Session | None = None) -> Document | None:
        return await self._subs.get(key, session=session)

    async def for_org(self, org: str) -> list[Document]:
        return await self._subs.find({"org": org}, limit=1000)

    async def active_with_heartbeat(self) -> list[Document]:
        return [s for s in await self._subs.find({"status": ACTIVE}, limit=1000) if s.get("heartbeat")]

    async def set(self, key: str, changes: Document, *, session: Session | None = None) -> None:
        await self._subs.update({"_id": key}, changes, session=session)

    async def for_topic(self, topic: str, *, session: Session | None = None) -> list[Document]:
        """The live subscriptions to ``topic`` (care plan subscriptions, which have no MDT)."""
        return await self._subs.find(
            {"topic": topic, "status": {"$in": [REQUESTED, ACTIVE]}}, limit=1000, session=session
        )

    async def notify(self, sub: Document, focus: str, now: str, *, session: Session) -> int:
        """Number one notification of ``sub`` about ``focus`` (a reference) and queue it for its channel."""
        number = await next_number(self._counters, f"subscription:{sub['_id']}", session=session)
        await self._subs.update({"_id": sub["_id"]}, {"events": number}, session=session)
        row = self._delivery(sub["_id"], number, EVENT, focus, now)
        if sub.get("channel") == SSE:
            row["status"] = STREAMED
        await self._deliveries.insert(row, session=session)
        return number

    async def enqueue(self, alert: Document, now: str, *, session: Session) -> int:
        """Number a notification for every subscription the alert matches (no gaps: same transaction)."""
        made = 0
        for sub in await self._subs.find(
            {"mdt": alert["mdt"], "status": {"$in": [REQUESTED, ACTIVE]}}, limit=1000, session=session
        ):
            filters = sub["filters"]
            if filters.get("patient") and filters["patient"] != alert["patient"]:
                continue
            doc_type = (alert.get("document") or {}).get("type_code")
            if filters.get("type") and filters["type"].rpartition("|")[2] != doc_type:
                continue
            number = await next_number(self._counters, f"subscription:{sub['_id']}", session=session)
            await self._subs.update({"_id": sub["_id"]}, {"events": number}, session=session)
            await self._deliveries.insert(self._delivery(sub["_id"], number, EVENT, alert["_id"], now), session=session)
            made += 1
        return made

    @staticmethod
    def _delivery(sub: str, number: int, kind: str, focus: str | None, now: str) -> Document:
        return {
            "_id": f"{sub}|{number:012d}",
            "subscription": sub,
            "number": number,
            "kind": kind,
            "focus": focus,
            "status": PENDING,
            "attempts": 0,
            "created": now,
            "due": now,
            "lease": None,
        }

    async def next_for_each(self) -> list[Document]:
        """The oldest undelivered notification of each subscription (delivery is in order)."""
        rows = await self._deliveries.find(
            {"status": {"$in": [PENDING, SENDING]}},
            sort=[("subscription", ASCENDING), ("number", ASCENDING)],
            limit=1000,
        )
        firsts: dict[str, Document] = {}
        for row in rows:
            firsts.setdefault(row["subscription"], row)
        return list(firsts.values())

    async def claim(self, row: Document, *, now: str, lease_until: str, session: Session | None = None) -> bool:
        """Take a delivery for one attempt; a lease lets another replica retake it if this one dies."""
        if row["status"] == SENDING:
            where = {"_id": row["_id"], "status": SENDING, "lease": row["lease"]}
            if (row["lease"] or "") > now:
                return False
        else:
            where = {"_id": row["_id"], "status": PENDING, "attempts": row["attempts"]}
        return await self._deliveries.update(where, {"status": SENDING, "lease": lease_until}, session=session) > 0

    async def settle(self, row: Document, changes: Document, *, session: Session) -> None:
        await self._deliveries.update({"_id": row["_id"]}, changes, session=session)

    async def events(self, sub: str, since: int, until: int, *, limit: int = 1000) -> list[Document]:
        return await self._deliveries.find(
            {"subscription": sub, "kind": EVENT, "number": {"$gte": since, "$lte": until}},
            sort=[("number", ASCENDING)],
            limit=limit,
        )


def focus_reference(focus: str) -> str:
    """An alert's id is its Communication's; a care plan notification's focus is already a reference."""
    return focus if "/" in focus else f"Communication/{focus}"


def _part(name: str, **value: Any) -> dict[str, Any]:
    return {"name": name, **value}


def status_resource(
    sub: Document,
    kind: str,
    events: list[tuple[int, str, str | None]],
    focus_resources: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The subscription's status, the first entry of every notification bundle and the answer to $status:
    the Backport IG's R4 form, a ``Parameters`` resource (backport-subscription-status-r4)."""
    parameters: list[dict[str, Any]] = [
        _part("subscription", valueReference={"reference": f"Subscription/{sub['_id']}"}),
        _part("topic", valueCanonical=sub.get("topic") or TOPIC),
        _part("status", valueCode=sub["status"]),
        _part("type", valueCode=kind),
        _part("events-since-subscription-start", valueString=str(sub["events"])),
    ]
    for number, at, focus in events:
        parts = [_part("event-number", valueString=str(number)), _part("timestamp", valueInstant=at)]
        if focus and sub["payload"] != "empty":
            parts.append(_part("focus", valueReference={"reference": focus_reference(focus)}))
        parameters.append(_part("notification-event", part=parts))
    if sub.get("error"):
        parameters.append(_part("error", valueCodeableConcept={"text": sub["error"]}))
    return {
        "resourceType": "Parameters",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [STATUS_PROFILE]},
        "parameter": parameters,
    }


def status_fields(resource: dict[str, Any]) -> dict[str, Any]:
    """A status ``Parameters`` read back: its values by name, notification events as lists of their parts
    (for receivers written in Python, the tests among them)."""
    out: dict[str, Any] = {"notification-event": []}
    for parameter in resource.get("parameter", []):
        if parameter["name"] == "notification-event":
            out["notification-event"].append(
                {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in parameter["part"]}
            )
        else:
            out[parameter["name"]] = next(v for k, v in parameter.items() if k.startswith("value"))
    return out


def notification_bundle(
    sub: Document,
    kind: str,
    events: list[tuple[int, str, str | None]],
    resources: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A ``history`` Bundle: the status Parameters first, then the focus per the payload content."""
    status = status_resource(sub, kind, events)
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{status['id']}",
            "resource": status,
            "request": {"method": "GET", "url": f"Subscription/{sub['_id']}/$status"},
            "response": {"status": "200"},
        }
    ]
    if sub["payload"] != "empty":
        for _, _, focus in events:
            if not focus:
                continue
            # A plan's new version is an update of the plan (the status's focus names the version).
            current, _, version = focus_reference(focus).partition("/_history/")
            entry: dict[str, Any] = {
                "fullUrl": current,
                "request": {"method": "PUT", "url": current}
                if version
                else {"method": "POST", "url": current.partition("/")[0]},
                "response": {"status": "200" if version else "201"},
            }
            if sub["payload"] == "full-resource" and resources and focus in resources:
                entry["resource"] = resources[focus]
            entries.append(entry)
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": datetime.now().astimezone().isoformat(),
        "entry": entries,
    }


def to_fhir(sub: Document, *, with_secret: bool = False) -> dict[str, Any]:
    topic = sub.get("topic") or TOPIC
    filters = "&".join(f"{k}={v}" for k, v in sorted(sub["filters"].items()))
    channel: dict[str, Any] = {
        "payload": "application/fhir+json",
        "_payload": {"extension": [{"url": PAYLOAD_URL, "valueCode": sub["payload"]}]},
    }
    if sub.get("channel") == SSE:
        # R4's channel.type has no code for it: the backport's extension names the exchange's channel.
        channel.update(
            {
                "type": "message",
                "_type": {
                    "extension": [{"url": CHANNEL_TYPE_URL, "valueCoding": {"system": CHANNEL_SYSTEM, "code": SSE}}]
                },
            }
        )
    else:
        channel.update({"type": "rest-hook", "endpoint": sub["endpoint"]})
    if sub.get("heartbeat"):
        channel["extension"] = [{"url": HEARTBEAT_URL, "valueUnsignedInt": sub["heartbeat"]}]
    resource_type = "CarePlan" if topic == CAREPLAN_TOPIC else "Communication"
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "id": sub["_id"],
        "status": sub["status"],
        "reason": sub.get("reason") or ("Care plan changes" if topic == CAREPLAN_TOPIC else "MDT alerts"),
        "criteria": topic,
        "_criteria": {"extension": [{"url": FILTER_URL, "valueString": f"{resource_type}?{filters}"}]},
        "channel": channel,
    }
    if sub.get("error"):
        resource["error"] = sub["error"]
    if with_secret:  # shown once, on creation: the receiver needs it to check signatures
        resource["extension"] = [{"url": SECRET_URL, "valueString": sub["secret"]}]
    return resource
