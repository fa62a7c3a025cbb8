"""Rest-hook endpoints (SSRF, issue 14): which URLs a Subscription may name, checked at creation and again
at every connection (DNS rebinding); the cap on subscriptions per organisation; the minimum heartbeat."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.notification.endpoints import EndpointPolicy, EndpointRefused
from services.notification.routes import DELIVERER
from services.notification.settings import NotificationSettings
from services.notification.subscriptions import ENDPOINT_REFUSED, HEARTBEAT_URL, parse_subscription
from shared.clock import FixedClock, stamp
from tests.unit.test_notification_alerts import notification, teams_known
from tests.unit.test_notification_subscriptions import FHIR, subscription

REFUSED_OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [
        {
            "severity": "error",
            "code": "invalid",
            "details": {
                "coding": [{"system": "https://lhcie.london/fhir/CodeSystem/error-code", "code": "INVALID_RESOURCE"}]
            },
            "diagnostics": ENDPOINT_REFUSED,
            "expression": ["Subscription.channel.endpoint"],
        }
    ],
}

# Each names an address the exchange must never call for a subscriber (or a URL form it must not read).
REFUSED = [
    "http://127.0.0.1:8080/fhir/Communication/$reconcile",  # the exchange itself
    "http://localhost:8080/fhir/Communication/$reconcile",  # the same, by name (the OS resolves it)
    "http://0x7f000001:8080/hook",  # hexadecimal
    "http://2130706433:8080/hook",  # decimal
    "http://017700000001:8080/hook",  # octal
    "http://0177.0.0.1:8080/hook",  # octal dotted
    "http://127.1:8080/hook",  # short form
    "http://[::1]:8080/hook",
    "http://[::ffff:127.0.0.1]:8080/hook",  # IPv4-mapped loopback
    "http://[::ffff:7f00:1]:8080/hook",
    "http://[64:ff9b::7f00:1]/hook",  # NAT64 of loopback
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",  # cloud metadata
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://169.254.10.1/hook",  # link-local
    "http://[fe80::1]/hook",
    "http://10.1.2.3/hook",  # RFC 1918
    "http://172.16.0.1/hook",
    "http://192.168.1.10/hook",
    "http://[fc00::1]/hook",  # ULA
    "http://[fd12:3456::1]/hook",
    "http://100.64.0.1/hook",  # CGNAT
    "http://0.0.0.0:8080/hook",  # unspecified
    "http://[::]:8080/hook",
    "http://224.0.0.1/hook",  # multicast
    "http://[ff02::1]/hook",
    "http://255.255.255.255/hook",
    "http://192.0.2.10/hook",  # documentation: not public
    "ftp://receiver.example.org/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:25/",
    "http://user:password@93.184.215.14/hook",  # credentials in the URL
    "http://93.184.215.14@127.0.0.1/hook",  # a host hidden behind userinfo
    "http://93.184.215.14\\@127.0.0.1/hook",  # parsers disagree on the backslash
    "http:///hook",
    "http://93.184.215.14:0/hook",
    "http://93.184.215.14:65536/hook",
    "http://no-such-host.invalid/hook",  # does not resolve
]


@pytest.mark.parametrize("endpoint", REFUSED)
async def test_endpoints_that_reach_the_exchange_or_private_networks_are_refused(endpoint: str) -> None:
    with pytest.raises(EndpointRefused):
        await EndpointPolicy().check(endpoint)  # the OS resolver, as at creation


async def test_the_api_refuses_each_with_an_operation_outcome_on_the_endpoint(stack: TestClient, tokens: Any) -> None:
    await teams_known(stack)
    answers = {}
    for endpoint in REFUSED:
        response = await stack.post(
            "/fhir/Subscription", json=subscription(endpoint), headers={**FHIR, **tokens.headers("RJ1")}
        )
        answers[endpoint] = (response.status, response.content_type, await response.json())
    assert answers == {e: (422, "application/fhir+json", REFUSED_OUTCOME) for e in REFUSED}
    assert await notification(stack).subscriptions.for_org("RJ1") == []


FAKE_DNS = {
    "receiver.example.org": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "split.example.org": ["93.184.215.14", "10.0.0.5"],
    "intranet.trust.nhs.uk": ["10.20.30.40"],
}


async def fake_resolve(host: str, port: int) -> list[str]:
    if host not in FAKE_DNS:
        raise OSError("no such host")
    return FAKE_DNS[host]


@pytest.mark.parametrize(
    ("allowed", "endpoint", "verdict"),
    [
        ("", "https://receiver.example.org/hook", None),
        ("", "https://93.184.215.14/hook", None),
        ("", "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook", None),
        ("", "https://split.example.org/hook", "private"),  # one private address is enough to refuse
        ("", "https://intranet.trust.nhs.uk/hook", "private"),
        ("intranet.trust.nhs.uk", "https://intranet.trust.nhs.uk/hook", None),  # allow-listed by name
        ("10.0.0.0/8", "https://intranet.trust.nhs.uk/hook", None),  # allow-listed by range
        ("10.0.0.0/8", "https://10.9.8.7/hook", None),
        ("10.0.0.0/8", "https://192.168.0.1/hook", "private"),
        ("127.0.0.1", "http://127.0.0.1:9000/hook", None),
        ("127.0.0.1", "http://0x7f000001:9000/hook", "obfuscated-address"),  # never, allow-listed or not
        ("127.0.0.1", "http://[::1]:9000/hook", "loopback"),
        ("127.0.0.1", "http://169.254.169.254/", "cloud-metadata"),
        ("", "https://nowhere.example.org/hook", "unresolved"),
    ],
)
async def test_the_policy_resolves_the_host_and_checks_every_address(
    allowed: str, endpoint: str, verdict: str | None
) -> None:
    policy = EndpointPolicy.parse(allowed.split(","))
    if verdict is None:
        assert await policy.check(endpoint, resolve=fake_resolve)
    else:
        with pytest.raises(EndpointRefused) as refused:
            await policy.check(endpoint, resolve=fake_resolve)
        assert refused.value.rule == verdict


def test_a_malformed_allow_list_fails_the_start() -> None:
    with pytest.raises(ValueError, match="allow-list"):
        NotificationSettings(webhook_allowed_hosts="127.0.0.1, 0x7f000001")
    assert NotificationSettings(
        webhook_allowed_hosts=" 127.0.0.1, receiver.trust.nhs.uk,10.0.0.0/8 "
    ).webhook_policy() == EndpointPolicy(
        frozenset({"receiver.trust.nhs.uk"}), EndpointPolicy.parse(["127.0.0.1", "10.0.0.0/8"]).networks
    )


# -- at connect time --


class Receiver:
    def __init__(self) -> None:
        self.hits = 0

    async def hook(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.Response(status=200)


@pytest.fixture
async def loopback_receiver() -> AsyncIterator[tuple[Receiver, int]]:
    got = Receiver()
    app = web.Application()
    app.router.add_post("/hook", got.hook)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield got, server.port
    await server.close()


async def stored_subscription(stack: TestClient, endpoint: str) -> str:
    """A subscription as an older exchange (or an allow-list since narrowed) accepted it."""
    n = notification(stack)
    doc = parse_subscription(subscription(endpoint), org="RJ1")
    async with n.ctx.store.transaction() as session:
        await n.subscriptions.create(doc, stamp(n.clock.now()), session=session)
    return str(doc["_id"])


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "rebound.example.org"])
async def test_delivery_checks_the_address_again_when_it_connects(
    stack: TestClient, loopback_receiver: tuple[Receiver, int], host: str
) -> None:
    got, port = loopback_receiver
    n = notification(stack)
    n.set_clock(FixedClock(datetime.now(UTC)))
    deliverer = stack.server.app[DELIVERER]

    async def rebinding(name: str, port: int) -> list[str]:
        # Public when the subscription was created, the exchange's own loopback now.
        return ["127.0.0.1"] if name == "rebound.example.org" else await fake_resolve(name, port)

    if host == "rebound.example.org":
        deliverer.resolve = rebinding
    key = await stored_subscription(stack, f"http://{host}:{port}/hook")
    await deliverer.run_once()
    assert got.hits == 0
    row = (await n.subscriptions.next_for_each())[0]
    assert row["subscription"] == key
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "endpoint refused (loopback)")


async def test_an_allow_listed_loopback_receiver_is_called(
    stack: TestClient, loopback_receiver: tuple[Receiver, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    got, port = loopback_receiver
    deliverer = stack.server.app[DELIVERER]
    await deliverer.close()
    monkeypatch.setattr(notification(stack), "settings", NotificationSettings(webhook_allowed_hosts="127.0.0.1"))
    await deliverer.start()
    await stored_subscription(stack, f"http://127.0.0.1:{port}/hook")
    await deliverer.run_once()
    assert got.hits == 1


# -- how many, how often --


async def test_an_organisation_may_hold_only_so_many_subscriptions(
    stack: TestClient, tokens: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        notification(stack),
        "settings",
        NotificationSettings(webhook_allowed_hosts="127.0.0.1", webhook_max_subscriptions_per_organisation=2),
    )
    await teams_known(stack)
    for _ in range(2):
        created = await stack.post(
            "/fhir/Subscription",
            json=subscription("http://127.0.0.1:9/hook"),
            headers={**FHIR, **tokens.headers("RJ1")},
        )
        assert created.status == 201
    refused = await stack.post(
        "/fhir/Subscription", json=subscription("http://127.0.0.1:9/hook"), headers={**FHIR, **tokens.headers("RJ1")}
    )
    assert refused.status == 422
    assert await refused.json() == {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": "error",
                "code": "business-rule",
                "details": {
                    "coding": [{"system": "https://lhcie.london/fhir/CodeSystem/error-code", "code": "BUSINESS_RULE"}]
                },
                "diagnostics": "An organisation may hold at most 2 subscriptions; this one has reached that limit.",
                "expression": ["Subscription"],
            }
        ],
    }
    assert len(await notification(stack).subscriptions.for_org("RJ1")) == 2


def with_heartbeat(seconds: Any) -> dict[str, Any]:
    resource = subscription("http://127.0.0.1:9/hook")
    resource["channel"]["extension"] = [{"url": HEARTBEAT_URL, "valueUnsignedInt": seconds}]
    return resource


@pytest.mark.parametrize(("seconds", "status"), [(1, 422), (59, 422), (0, 422), ("60", 422), (60, 201), (3600, 201)])
async def test_heartbeats_may_not_be_shorter_than_the_minimum(
    stack: TestClient, tokens: Any, monkeypatch: pytest.MonkeyPatch, seconds: Any, status: int
) -> None:
    monkeypatch.setattr(notification(stack), "settings", NotificationSettings(webhook_allowed_hosts="127.0.0.1"))
    await teams_known(stack)
    response = await stack.post(
        "/fhir/Subscription", json=with_heartbeat(seconds), headers={**FHIR, **tokens.headers("RJ1")}
    )
    assert response.status == status
    if status == 422:
        issue = (await response.json())["issue"]
        assert [(i["expression"], i["diagnostics"]) for i in issue] == [
            (["Subscription.channel.extension"], "heartbeat period must be a whole number of seconds, at least 60")
        ]
