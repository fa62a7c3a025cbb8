"""``lhcie``: one command line for running, serving, tokens, posting, alerts and the audit check."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from lhcie.bench.command import add_bench_parser, cmd_bench
from lhcie.discovery import CliError, Exchange, announce, find, signing_key_dir, withdraw
from lhcie.services import SPECS
from shared.auth import PURPOSES_OF_USE, ROLES, EmbeddedIssuer
from shared.config import Settings, load_settings
from shared.fhir.identifiers import LOINC, NHS_NUMBER, ODS_CODE

TEST_PATIENT = "9000000009"


def _settings() -> Settings:
    """The settings, or one line naming the ``LHCIE_*`` variable that is wrong."""
    try:
        return load_settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = f"LHCIE_{str(first['loc'][0]).upper()}" if first.get("loc") else "an LHCIE_* setting"
        raise CliError(f"{name} is not valid: {first['msg']}") from None


def _exchange(args: argparse.Namespace) -> Exchange:
    return find(url=getattr(args, "url", None))


def _issuer(settings: Settings, exchange: Exchange | None = None) -> EmbeddedIssuer:
    """The running exchange's issuer; never a new key (its tokens would be refused)."""
    data_dir = signing_key_dir(exchange or find())
    return EmbeddedIssuer(data_dir, issuer=settings.jwt_issuer, audience=settings.jwt_audience)


def _unreachable(url: str) -> CliError:
    base = url.split("/fhir")[0]
    return CliError(
        f"cannot reach the exchange at {base} (is `make run` running? set LHCIE_URL, or "
        "LHCIE_HTTP_HOST and LHCIE_HTTP_PORT)"
    )


def _request(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={
            "Authorization": f"Bearer {token}",
            "Accept": "application/fhir+json",
            **({"Content-Type": "application/fhir+json"} if data else {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as error:
        return error.code, _json(error.read())
    except (urllib.error.URLError, OSError):
        raise _unreachable(url) from None


def _json(raw: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(raw or b"{}")
    except ValueError:
        return {"issue": [{"diagnostics": raw[:200].decode(errors="replace")}]}
    return parsed if isinstance(parsed, dict) else {}


def _diagnostics(body: dict[str, Any]) -> str:
    issues = body.get("issue") or [{}]
    return "; ".join(str(i.get("diagnostics") or i.get("code") or "") for i in issues).strip() or json.dumps(body)


def cmd_run(args: argparse.Namespace) -> int:
    from lhcie.runner import embedded_defaults, run

    settings = embedded_defaults()
    url = f"http://{settings.http_host}:{settings.http_port}"
    banner = f"""
LHCIE exchange running on {url} (all five services, embedded adapters, data in {settings.data_dir}/)

  The MDT coordinator console (sign in as a demo person, e.g. Dr A. Smith):
    {url}/console/
  Post a histopathology report for the test patient as Guy's and St Thomas' (RJ1):
    .venv/bin/lhcie post examples/histopathology-report.pdf
  Post with curl (the README's examples use these files):
    curl -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/fhir+json' \\
      -d @examples/document-reference.json {url}/fhir/DocumentReference
  See the alert the RJ1 lung cancer MDT coordinator receives:
    .venv/bin/lhcie alerts --mdt rj1-lung
  Check the audit log's hash chain:
    .venv/bin/lhcie audit verify
  A token for your own requests (curl -H "Authorization: Bearer $TOKEN" {url}/fhir/...):
    TOKEN=$(.venv/bin/lhcie token --org RJ1 --role system)
  Open the Data Controller Console as Royal Free's DCC, or the demo patient's page (links that sign you in):
    .venv/bin/lhcie token --org RAL --role dcc-admin --console
    .venv/bin/lhcie token --org NHSLOGIN --role patient --patient 9000000009 --console

Other terminals find this exchange (its address and signing key) without any LHCIE_* settings.
Stop with Ctrl-C.
"""
    announce(url, settings.data_dir, max_inline_bytes=settings.max_inline_bytes)
    try:
        run(settings, list(SPECS), banner=banner)
    finally:
        withdraw(settings.data_dir)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from lhcie.runner import run, serve_settings

    run(serve_settings(), [args.service])
    return 0


# The page each role works in (``lhcie token --console``).
CONSOLE_PAGES = {
    "mdt-coordinator": "console",
    "patient": "patient",
    "carer": "patient",
    "dcc-admin": "dcc",
    "auditor": "dcc",
    "exchange-operator": "dcc",
}


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings()
    if not 0 < args.ttl <= settings.jwt_max_lifetime_seconds:
        print(
            f"lhcie token: --ttl must be between 1 and {settings.jwt_max_lifetime_seconds} seconds "
            "(LHCIE_JWT_MAX_LIFETIME_SECONDS)",
            file=sys.stderr,
        )
        return 2
    exchange = _exchange(args)
    page = CONSOLE_PAGES.get(args.role)
    if getattr(args, "console", False) and page is None:
        raise CliError(f"the {args.role} role has no console page (it is for {', '.join(sorted(CONSOLE_PAGES))})")
    if page == "console" and getattr(args, "console", False) and not args.mdt:
        raise CliError("the coordinator console needs --mdt (the CareTeam id, e.g. rj1-lung)")
    minted = _issuer(settings, exchange).mint(
        org=args.org, role=args.role, mdt=args.mdt, patient=args.patient, ttl=args.ttl, purpose=args.purpose
    )
    if getattr(args, "console", False):
        # A link to the role's page that signs in with this token (kept in the URL fragment).
        print(f"{exchange.url.rstrip('/')}/{page}/#token={minted}")
        return 0
    print(minted)
    return 0


def document_reference(
    *, content_type: str, patient: str, org: str, type_system: str, type_code: str, mdt: str | None, title: str
) -> dict[str, Any]:
    """The metadata; the content goes inline or as a second part (lhcie/upload.py)."""
    resource: dict[str, Any] = {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": {"coding": [{"system": type_system, "code": type_code}]},
        "subject": {"identifier": {"system": NHS_NUMBER, "value": patient}},
        "custodian": {"identifier": {"system": ODS_CODE, "value": org}},
        "author": [{"identifier": {"system": ODS_CODE, "value": org}}],
        "description": title,
        "content": [{"attachment": {"contentType": content_type, "title": title}}],
    }
    if mdt:
        resource["context"] = {"related": [{"reference": f"CareTeam/{mdt}"}]}
    return resource


def _document_type(given: str) -> tuple[str, str]:
    """``system|code`` (e.g. ``http://snomed.info/sct|861421000000109``), or a bare LOINC code."""
    system, bar, code = given.partition("|")
    return (system, code) if bar else (LOINC, given)


def cmd_types(args: argparse.Namespace) -> int:
    from services.intake.catalogue import load
    from services.intake.settings import IntakeSettings

    for entry in load(IntakeSettings().intake_document_types).types:
        print(f"{entry.system}|{entry.code}  {entry.display}  ({entry.category})")
    return 0


def cmd_post(args: argparse.Namespace) -> int:
    from lhcie.upload import post_document

    settings = _settings()
    exchange = _exchange(args)
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such file")
    with path.open("rb") as handle:
        head = handle.read(5)
    content_type = args.content_type or ("application/pdf" if head.startswith(b"%PDF-") else "text/plain")
    system, code = _document_type(args.type)
    resource = document_reference(
        content_type=content_type,
        patient=args.patient.replace(" ", ""),
        org=args.org,
        type_system=system,
        type_code=code,
        mdt=args.mdt or None,
        title=args.title or path.name,
    )
    token = args.token or _issuer(settings, exchange).mint(org=args.org, role="system")
    url = f"{exchange.url.rstrip('/')}/fhir/DocumentReference"
    limit = exchange.max_inline_bytes or settings.max_inline_bytes
    status, body, mode = asyncio.run(
        post_document(
            url,
            token,
            resource,
            path,
            content_type=content_type,
            max_inline_bytes=limit,
            progress=None if args.quiet else sys.stderr,
        )
    )
    if args.json:
        print(json.dumps(body, indent=2))
    elif status == 202:
        print(f"202 document {body.get('id')}")
        if not args.quiet:
            print(f"sent {mode}: {path.name}, {path.stat().st_size} bytes", file=sys.stderr)
    else:
        hint = " (`lhcie types` lists them)" if status == 422 and "document type" in _diagnostics(body) else ""
        print(f"lhcie post: {status} {_diagnostics(body)}{hint}", file=sys.stderr)
    return 0 if status == 202 else 1


def _spaced(nhs_number: str) -> str:
    return f"{nhs_number[:3]} {nhs_number[3:6]} {nhs_number[6:]}" if len(nhs_number) == 10 else nhs_number


def cmd_alerts(args: argparse.Namespace) -> int:
    settings = _settings()
    exchange = _exchange(args)
    org = args.org or args.mdt.split("-")[0].upper()
    token = args.token or _issuer(settings, exchange).mint(org=org, role="mdt-coordinator", mdt=args.mdt)
    status, body = _request(
        "GET", f"{exchange.url.rstrip('/')}/fhir/Communication?recipient=CareTeam/{args.mdt}", token
    )
    if status != 200:
        print(f"lhcie alerts: {status} {_diagnostics(body)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    entries = body.get("entry", [])
    print(f"{len(entries)} alert(s) for CareTeam/{args.mdt}")
    for entry in entries:
        alert = entry["resource"]
        patient = ((alert.get("subject") or {}).get("identifier") or {}).get("value", "")
        print(
            f"  {alert['sent'][:19]}  {alert['priority']:<8} {alert['status']:<12} "
            f"patient {_spaced(patient) or '-':<12}  "
            f"{alert['payload'][0]['contentString']}  ({alert['about'][0]['reference']})"
        )
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    if args.url:
        settings = _settings()
        token = _issuer(settings).mint(org=args.org, role="dcc-admin")
        since = f"?since={args.since_checkpoint}" if getattr(args, "since_checkpoint", None) else ""
        _, body = _request("GET", f"{args.url.rstrip('/')}/fhir/AuditEvent/$verify{since}", token)
        params = {p["name"]: next(v for k, v in p.items() if k.startswith("value")) for p in body.get("parameter", [])}
    else:
        params = asyncio.run(_verify_store(getattr(args, "since_checkpoint", None)))
    intact = params.get("intact") is True
    detail = f" first broken record: {params['firstBroken']} ({params.get('problem')})" if not intact else ""
    signed = (
        f" {params.get('checkpoints', 0)} signed checkpoint(s) matched; {params.get('unsigned', 0)} newer record(s) not yet signed."
        if intact
        else ""
    )
    print(
        f"audit chain {'intact' if intact else 'BROKEN'}: {params.get('count', 0)} record(s) checked.{detail}{signed}"
    )
    return 0 if intact else 1


async def _verify_store(since: str | None = None) -> dict[str, Any]:
    from services.audit.tools import verify_store

    # The running exchange's data directory when no LHCIE_DATA_DIR says otherwise (a second terminal).
    return await verify_store(load_settings(data_dir=find().data_dir), since)


def cmd_audit_export(args: argparse.Namespace) -> int:
    from services.audit.tools import run_export

    return run_export(args)


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


def cmd_bus_dead_letters(args: argparse.Namespace) -> int:
    """Show (or, with --replay, requeue) what waits in a dead-letter queue: ids and types, never payloads."""
    from lhcie.runner import serve_defaults
    from shared.bus import open_bus
    from shared.events import Event

    dead = args.queue if args.queue.endswith(".dead") else f"{args.queue}.dead"

    async def work() -> int:
        bus = open_bus(serve_defaults(), name="lhcie-dead-letters")
        await bus.start()
        try:
            if args.replay:
                moved = await bus.replay(dead, args.limit)
                print(f"requeued {moved} message(s) from {dead} to {dead.removesuffix('.dead')}")
                return 0
            bodies = await bus.peek(dead, args.limit)
        finally:
            await bus.close()
        print(f"{len(bodies)} message(s) shown from {dead} (left in place)")
        for body in bodies:
            try:
                event = Event.from_bytes(body)
                print(
                    f"  {event.time.isoformat(timespec='seconds')}  {event.type:<28} {event.id}  "
                    f"subject={event.subject or '-'}"
                )
            except ValueError:
                print(f"  (not a valid event: {len(body)} bytes)")
        return 0

    return asyncio.run(work())


def cmd_store_init(args: argparse.Namespace) -> int:
    from lhcie.runner import serve_defaults
    from shared.store import StoreUnavailable
    from shared.store.init import init_stores

    settings = serve_defaults()
    names = args.service or list(SPECS)
    unknown = sorted(set(names) - set(SPECS))
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    try:
        done = asyncio.run(init_stores(settings, [SPECS[n] for n in names]))
    except StoreUnavailable:
        print("the document store is unavailable; nothing was created", file=sys.stderr)
        return 2
    print(f"{settings.doc_store.value}: collections and indexes ready for {', '.join(done)}")
    return 0


def cmd_storage_init(args: argparse.Namespace) -> int:
    from lhcie.runner import serve_defaults
    from services.storage.bucket import prepare, report

    text, status = report(asyncio.run(prepare(serve_defaults(), apply=not args.check)))
    print(text)
    return status


def cmd_storage_verify(args: argparse.Namespace) -> int:
    from lhcie.runner import serve_defaults
    from services.storage.integrity import render, verify
    from shared.objects import ObjectStoreUnavailable

    try:
        text, status = render(asyncio.run(verify(serve_defaults())))
    except ObjectStoreUnavailable:
        print("the object store is unavailable; nothing was checked", file=sys.stderr)
        return 2
    print(text)
    return status


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
    token.add_argument(
        "--purpose",
        choices=PURPOSES_OF_USE,
        help="purpose of use the token states (default: the role's, direct or cancer care)",
    )
    token.add_argument(
        "--console",
        action="store_true",
        help="print a link to the role's page signed in with it: the coordinator console (/console/), "
        "the DCC console (/dcc/) or the patient page (/patient/)",
    )

    post = sub.add_parser("post", help="post a document as a hospital system")
    post.add_argument("file")
    post.add_argument("--org", default="RJ1")
    post.add_argument("--patient", default=TEST_PATIENT)
    post.add_argument(
        "--type",
        default="11526-1",
        help="document type: system|code (e.g. 'http://snomed.info/sct|861421000000109') or a LOINC "
        "code (default 11526-1, Pathology study); `lhcie types` lists them",
    )
    post.add_argument("--mdt", default="rj1-lung", help="CareTeam to alert ('' for none)")
    post.add_argument("--content-type")
    post.add_argument("--title")
    post.add_argument("--url")
    post.add_argument("--token")
    post.add_argument("--json", action="store_true")
    post.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("types", help="list the document types intake accepts (system|code, name, media types)")

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
    verify.add_argument(
        "--since-checkpoint",
        metavar="SEQ",
        help="start at this checkpoint (its record number, or 'latest') instead of record 1",
    )
    export = audit_sub.add_parser("export", help="write the records of a date range as NDJSON (for archiving)")
    export.add_argument("--start", required=True, help="first day (or dateTime), e.g. 2026-11-01")
    export.add_argument("--end", required=True, help="last day, inclusive, e.g. 2026-11-30")
    export.add_argument("--output", "-o", help="file to write (default: standard output)")
    export.add_argument("--url", help="ask a running audit service (as a DCC administrator) instead of its store")
    export.add_argument("--org", default="RJ1")

    bus = sub.add_parser("bus", help="message bus tools")
    bus_sub = bus.add_subparsers(dest="bus_command", required=True)
    bus_sub.add_parser("init", help="declare the exchanges, queues and dead-letter queues")
    dead = bus_sub.add_parser("dead-letters", help="list a queue's dead letters (ids and types), or --replay them")
    dead.add_argument("queue", help="e.g. storage.documents (its .dead queue is read)")
    dead.add_argument("--limit", type=int, default=20)
    dead.add_argument("--replay", action="store_true", help="move them back to their queue to be handled again")

    store = sub.add_parser("store", help="document store tools")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    store_init = store_sub.add_parser("init", help="create every service's collections and indexes (idempotent)")
    store_init.add_argument("service", nargs="*", help=f"only these services (default all: {', '.join(SPECS)})")

    storage = sub.add_parser("storage", help="document bucket tools")
    storage_sub = storage.add_subparsers(dest="storage_command", required=True)
    storage_init = storage_sub.add_parser(
        "init",
        help="create or check the bucket: versioning, encryption, "
        "object lock, staging lifecycle; report what is unsupported",
    )
    storage_init.add_argument("--check", action="store_true", help="only check; change nothing")
    storage_sub.add_parser("verify", help="re-read every filed object and check its SHA-256; exit 0 only if intact")
    add_bench_parser(sub)
    return root


HANDLERS = {
    "run": cmd_run,
    "serve": cmd_serve,
    "token": cmd_token,
    "post": cmd_post,
    "types": cmd_types,
    "alerts": cmd_alerts,
    ("audit", "verify"): cmd_audit_verify,
    ("audit", "export"): cmd_audit_export,
    ("bus", "init"): cmd_bus_init,
    ("bus", "dead-letters"): cmd_bus_dead_letters,
    ("store", "init"): cmd_store_init,
    ("storage", "init"): cmd_storage_init,
    ("storage", "verify"): cmd_storage_verify,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    key = args.command
    if key == "audit":
        key = ("audit", args.audit_command)
    elif key == "bus":
        key = ("bus", args.bus_command)
    elif key == "store":
        key = ("store", args.store_command)
    elif key == "storage":
        key = ("storage", args.storage_command)
    try:
        return HANDLERS[key](args)
    except CliError as exc:
        # One line that says what to set, never a traceback (issue 19).
        print(f"lhcie {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
