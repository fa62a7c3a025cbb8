"""The commands a person or a hospital system runs against an exchange: ``token``, ``post``, ``types`` and
``alerts``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lhcie.cli_support import diagnostics, exchange_of, issuer_for, request, settings_or_error
from lhcie.discovery import CliError
from shared.auth import PURPOSES_OF_USE, ROLES
from shared.fhir.identifiers import LOINC, NHS_NUMBER, ODS_CODE

TEST_PATIENT = "9000000009"


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
    settings = settings_or_error()
    if not 0 < args.ttl <= settings.jwt_max_lifetime_seconds:
        print(
            f"lhcie token: --ttl must be between 1 and {settings.jwt_max_lifetime_seconds} seconds "
            "(LHCIE_JWT_MAX_LIFETIME_SECONDS)",
            file=sys.stderr,
        )
        return 2
    exchange = exchange_of(args)
    page = CONSOLE_PAGES.get(args.role)
    if getattr(args, "console", False) and page is None:
        raise CliError(f"the {args.role} role has no console page (it is for {', '.join(sorted(CONSOLE_PAGES))})")
    if page == "console" and getattr(args, "console", False) and not args.mdt:
        raise CliError("the coordinator console needs --mdt (the CareTeam id, e.g. rj1-lung)")
    minted = issuer_for(settings, exchange).mint(
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

    settings = settings_or_error()
    exchange = exchange_of(args)
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
    token = args.token or issuer_for(settings, exchange).mint(org=args.org, role="system")
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
        hint = " (`lhcie types` lists them)" if status == 422 and "document type" in diagnostics(body) else ""
        print(f"lhcie post: {status} {diagnostics(body)}{hint}", file=sys.stderr)
    return 0 if status == 202 else 1


def _spaced(nhs_number: str) -> str:
    return f"{nhs_number[:3]} {nhs_number[3:6]} {nhs_number[6:]}" if len(nhs_number) == 10 else nhs_number


def cmd_alerts(args: argparse.Namespace) -> int:
    settings = settings_or_error()
    exchange = exchange_of(args)
    org = args.org or args.mdt.split("-")[0].upper()
    token = args.token or issuer_for(settings, exchange).mint(org=org, role="mdt-coordinator", mdt=args.mdt)
    status, body = request("GET", f"{exchange.url.rstrip('/')}/fhir/Communication?recipient=CareTeam/{args.mdt}", token)
    if status != 200:
        print(f"lhcie alerts: {status} {diagnostics(body)}", file=sys.stderr)
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


def add_client_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


CLIENT_HANDLERS: dict[str | tuple[str, str], Callable[[argparse.Namespace], int]] = {
    "token": cmd_token,
    "post": cmd_post,
    "types": cmd_types,
    "alerts": cmd_alerts,
}
