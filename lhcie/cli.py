"""``lhcie``: one command line for running, serving, tokens, posting, alerts and the audit check."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lhcie.services import SPECS
from shared.auth import ROLES, EmbeddedIssuer
from shared.config import Settings, load_settings
from shared.fhir.identifiers import LOINC, NHS_NUMBER, ODS_CODE

TEST_PATIENT = "9000000009"


def _base_url(settings: Settings, given: str | None) -> str:
    return (given or f"http://{settings.http_host}:{settings.http_port}").rstrip("/")


def _issuer(settings: Settings) -> EmbeddedIssuer:
    return EmbeddedIssuer(settings.data_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


def _request(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}",
        "Accept": "application/fhir+json",
        **({"Content-Type": "application/fhir+json"} if data else {}),
    })
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def cmd_run(args: argparse.Namespace) -> int:
    from lhcie.runner import embedded_defaults, run

    settings = embedded_defaults()
    url = f"http://{settings.http_host}:{settings.http_port}"
    banner = f"""
LHCIE exchange running on {url} (all five services, embedded adapters, data in {settings.data_dir}/)

  Post a histopathology report for the test patient as Guy's and St Thomas' (RJ1):
    .venv/bin/lhcie post some-report.pdf
  See the alert the RJ1 lung cancer MDT coordinator receives:
    .venv/bin/lhcie alerts --mdt rj1-lung
  Check the audit log's hash chain:
    .venv/bin/lhcie audit verify
  A token for your own requests (curl -H "Authorization: Bearer $TOKEN" {url}/fhir/...):
    TOKEN=$(.venv/bin/lhcie token --org RJ1 --role system)

Stop with Ctrl-C.
"""
    run(settings, list(SPECS), banner=banner)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lhcie.runner import run, serve_defaults

    run(serve_defaults(), [args.service])
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    settings = load_settings()
    print(_issuer(settings).mint(org=args.org, role=args.role, mdt=args.mdt, patient=args.patient, ttl=args.ttl))
    return 0


def document_reference(content: bytes, *, content_type: str, patient: str, org: str, type_code: str,
                       mdt: str | None, title: str) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": LOINC, "code": type_code}]},
        "subject": {"identifier": {"system": NHS_NUMBER, "value": patient}},
        "custodian": {"identifier": {"system": ODS_CODE, "value": org}},
        "author": [{"identifier": {"system": ODS_CODE, "value": org}}],
        "description": title,
        "content": [{"attachment": {"contentType": content_type, "data": base64.b64encode(content).decode(),
                                    "title": title}}],
    }
    if mdt:
        resource["context"] = {"related": [{"reference": f"CareTeam/{mdt}"}]}
    return resource


def cmd_post(args: argparse.Namespace) -> int:
    settings = load_settings()
    path = Path(args.file)
    content = path.read_bytes()
    content_type = args.content_type or ("application/pdf" if content.startswith(b"%PDF-") else "text/plain")
    resource = document_reference(content, content_type=content_type, patient=args.patient, org=args.org,
                                  type_code=args.type, mdt=args.mdt, title=args.title or path.name)
    token = args.token or _issuer(settings).mint(org=args.org, role="system")
    status, body = _request("POST", f"{_base_url(settings, args.url)}/fhir/DocumentReference", token, resource)
    print(json.dumps(body, indent=2) if args.json else (f"{status} document {body.get('id')}" if status == 202 else
                                                         f"{status} {json.dumps(body)}"))
    return 0 if status == 202 else 1


def cmd_alerts(args: argparse.Namespace) -> int:
    settings = load_settings()
    org = args.org or args.mdt.split("-")[0].upper()
    token = args.token or _issuer(settings).mint(org=org, role="mdt-coordinator", mdt=args.mdt)
    status, body = _request("GET", f"{_base_url(settings, args.url)}/fhir/Communication?recipient=CareTeam/{args.mdt}",
                            token)
    if status != 200:
        print(f"{status} {json.dumps(body)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    entries = body.get("entry", [])
    print(f"{len(entries)} alert(s) for CareTeam/{args.mdt}")
    for entry in entries:
        alert = entry["resource"]
        print(f"  {alert['sent'][:19]}  {alert['priority']:<8} {alert['status']:<12} "
              f"{alert['payload'][0]['contentString']}  ({alert['about'][0]['reference']})")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.url:
        settings = load_settings()
        token = _issuer(settings).mint(org=args.org, role="dcc-admin")
        status, body = _request("GET", f"{args.url.rstrip('/')}/fhir/AuditEvent/$verify", token)
        params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in body.get("parameter", [])}
    else:
        params = asyncio.run(_verify_store())
    intact = params.get("intact") is True
    detail = f" first broken record: {params['firstBroken']} ({params.get('problem')})" if not intact else ""
    print(f"audit chain {'intact' if intact else 'BROKEN'}: {params.get('count', 0)} record(s) checked.{detail}")
    return 0 if intact else 1


async def _verify_store() -> dict[str, Any]:
    from services.audit.chain import AuditChain
    from shared.store import open_store

    store = open_store(load_settings(), "audit")
    chain = AuditChain(store)
    await store.start()
    try:
        result = await chain.verify()
    finally:
        await store.close()
    return {"intact": result.intact, "count": result.count, "firstBroken": result.first_broken,
            "problem": result.problem}


def cmd_bus_init(args: argparse.Namespace) -> int:
    from lhcie.runner import serve_defaults
    from shared.bus import open_bus
    from shared.topology import ALL_QUEUES

    async def declare() -> None:
        bus = open_bus(serve_defaults(), name="lhcie-bus-init")
        await bus.start()
        try:
            await bus.declare(ALL_QUEUES)
        finally:
            await bus.close()

    asyncio.run(declare())
    print(f"declared {len(ALL_QUEUES)} queues and their dead-letter queues")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lhcie", description="London Health & Care Information Exchange")
    sub = root.add_subparsers(dest="command", required=True)

    sub.add_parser("run", help="all five services in one process with embedded adapters and demo data")

    serve = sub.add_parser("serve", help="one service with the real adapters (RabbitMQ, S3)")
    serve.add_argument("service", choices=list(SPECS))

    token = sub.add_parser("token", help="print a bearer token from the embedded issuer")
    token.add_argument("--org", required=True, help="ODS code, e.g. RJ1")
    token.add_argument("--role", required=True, choices=ROLES)
    token.add_argument("--mdt", help="CareTeam id, for MDT staff")
    token.add_argument("--patient", help="NHS number, for the patient role")
    token.add_argument("--ttl", type=int, default=3600, help="seconds (default 3600)")

    post = sub.add_parser("post", help="post a document as a hospital system")
    post.add_argument("file")
    post.add_argument("--org", default="RJ1")
    post.add_argument("--patient", default=TEST_PATIENT)
    post.add_argument("--type", default="11526-1", help="LOINC document type (default Pathology study)")
    post.add_argument("--mdt", default="rj1-lung", help="CareTeam to alert ('' for none)")
    post.add_argument("--content-type")
    post.add_argument("--title")
    post.add_argument("--url")
    post.add_argument("--token")
    post.add_argument("--json", action="store_true")

    alerts = sub.add_parser("alerts", help="list an MDT's alerts as its coordinator")
    alerts.add_argument("--mdt", required=True)
    alerts.add_argument("--org")
    alerts.add_argument("--url")
    alerts.add_argument("--token")
    alerts.add_argument("--json", action="store_true")

    audit = sub.add_parser("audit", help="audit log tools")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; exit 0 only when intact")
    verify.add_argument("--url", help="ask a running audit service instead of reading its store")
    verify.add_argument("--org", default="RJ1")

    bus = sub.add_parser("bus", help="message bus tools")
    bus_sub = bus.add_subparsers(dest="bus_command", required=True)
    bus_sub.add_parser("init", help="declare the exchanges, queues and dead-letter queues")
    return root


HANDLERS = {
    "run": cmd_run,
    "serve": cmd_serve,
    "token": cmd_token,
    "post": cmd_post,
    "alerts": cmd_alerts,
    ("audit", "verify"): cmd_audit_verify,
    ("bus", "init"): cmd_bus_init,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    key = args.command
    if key == "audit":
        key = ("audit", args.audit_command)
    elif key == "bus":
        key = ("bus", args.bus_command)
    return HANDLERS[key](args)


if __name__ == "__main__":
    sys.exit(main())
