"""The patient's access report, as a FHIR Bundle and as a page a patient can read."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

from services.audit.domain import AccessReport, summary
from shared.fhir.identifiers import NHS_NUMBER, ODS_CODE

DOCUMENT_COUNT = "https://lhcie.london/fhir/StructureDefinition/documents-held"

ROLE_NAMES = {
    "clinician": "a clinician",
    "mdt-coordinator": "an MDT coordinator",
    "system": "a hospital system",
    "dcc-admin": "a data-controller administrator",
    "patient": "you",
    "carer": "your carer",
    "auditor": "an auditor",
    "exchange-operator": "the exchange's operations team",
}
# Why an access was refused (shared.policy rule names), as a patient would say it.
REFUSALS = {
    "patient-opt-out-organisation": "you asked for your records not to be shared with this organisation",
    "patient-opt-out-category": "you asked for this kind of document not to be shared",
    "no-isa": "their organisation has no sharing agreement that covers it",
    "no-carer-grant": "they do not have your permission to act as your carer",
    "not-the-patient": "only you may see your own records",
    "unknown-organisation": "their organisation is not registered with the exchange",
}
REFUSED = "the sharing rules did not allow it"
# A patient in London reads London time; the report says which (GMT or BST) beside every time.
LOCAL = ZoneInfo("Europe/London")


def local_time(iso: str | None) -> str:
    if not iso:
        return ""
    at = datetime.fromisoformat(iso).astimezone(LOCAL)
    return f"{at:%d %b %Y %H:%M} {at:%Z}"


def described(s: dict[str, Any], kinds: dict[str, str] | None = None) -> str:
    """What was looked at, in plain words: a document by its kind, and its number to quote if asked."""
    refs = [r for r in s["refs"] if not r.startswith("Binary/")] or s["refs"]
    kind, _, ident = (refs[0] if refs else "").partition("/")
    if s.get("event") == "document.searched":
        return "searched your documents"
    if kind == "DocumentReference":
        if s["search"]:
            return "searched your documents"
        named = (kinds or {}).get(ident)
        return f"opened your {named.lower()} (document {ident})" if named else f"opened document {ident}"
    if kind == "Communication":
        return "looked at alerts about you" if s["search"] else "looked at an alert about you"
    if kind == "EpisodeOfCare":
        return "looked at your care pathway"
    return "searched your records" if s["search"] else "looked at your records"


def bundle(report: AccessReport) -> dict[str, Any]:
    """A ``collection`` Bundle: the patient, each organisation holding documents about them (with how
    many), then every access to those documents (AuditEvents, oldest first)."""
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {"resourceType": "Patient", "identifier": [{"system": NHS_NUMBER, "value": report.nhs_number}]},
        }
    ]
    for holder in report.holders:
        org: dict[str, Any] = {
            "resourceType": "Organization",
            "id": holder.ods_code,
            "identifier": [{"system": ODS_CODE, "value": holder.ods_code}],
            "extension": [{"url": DOCUMENT_COUNT, "valueInteger": len(holder.documents)}],
        }
        if holder.name:
            org["name"] = holder.name
        entries.append({"fullUrl": f"Organization/{holder.ods_code}", "resource": org})
    # The organisations that looked without holding anything, named too: a patient reads names, not codes.
    held = {h.ods_code for h in report.holders}
    for ods, name in sorted(report.names.items()):
        if ods not in held:
            entries.append(
                {
                    "fullUrl": f"Organization/{ods}",
                    "resource": {
                        "resourceType": "Organization",
                        "id": ods,
                        "identifier": [{"system": ODS_CODE, "value": ods}],
                        "name": name,
                    },
                }
            )
    for event in report.accesses:
        entries.append({"fullUrl": f"AuditEvent/{event['id']}", "resource": event})
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": report.generated.isoformat(),
        # No "total": FHIR allows it on a searchset or history only (bdl-1); this is a collection.
        "entry": entries,
    }


# A carer reads the same report about the person they care for: "their records", not "your records".
THIRD_PERSON = (
    ("you asked", "they asked"),
    ("have your permission", "have the patient's permission"),
    ("only you may", "only the patient may"),
)


def in_third_person(page: str) -> str:
    for second, third in THIRD_PERSON:
        page = page.replace(second, third)
    return re.sub(r"\byou\b", "them", re.sub(r"\byour\b", "their", re.sub(r"\bYour\b", "Their", page)))


def html_page(report: AccessReport, *, carer: bool = False) -> str:
    page = _html_page(report)
    return in_third_person(page) if carer else page


def _html_page(report: AccessReport) -> str:
    def org_name(ods: str | None) -> str:
        if not ods:
            return "an unknown organisation"
        return f"{report.names[ods]} ({ods})" if ods in report.names else ods

    holders = (
        "".join(f"<tr><td>{escape(org_name(h.ods_code))}</td><td>{len(h.documents)}</td></tr>" for h in report.holders)
        or '<tr><td colspan="2">No organisation has shared documents about you through the exchange.</td></tr>'
    )
    rows = []
    for event in report.accesses:
        s = summary(event)
        when = escape(local_time(s["when"]))
        who = escape(f"{ROLE_NAMES.get(s['role'] or '', s['role'] or 'someone')} ({s['subject']})")
        outcome = "seen" if s["allowed"] else "refused"
        why = "" if s["allowed"] else REFUSALS.get(report.rules.get(event.get("id", ""), ""), REFUSED)
        rows.append(
            f"<tr><td>{when}</td><td>{escape(org_name(s['org']))}</td><td>{who}</td>"
            f'<td>{escape(described(s, report.kinds))}</td><td class="{outcome}">{outcome}</td><td>{escape(why)}</td></tr>'
        )
    accesses = "".join(rows) or '<tr><td colspan="6">Nobody has looked at your records through the exchange.</td></tr>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Who has seen your records</title>
<style>
body{{font-family:Arial,Helvetica,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#212b32}}
table{{border-collapse:collapse;width:100%;margin-bottom:2rem}}th,td{{text-align:left;padding:.5rem;border-bottom:1px solid #d8dde0}}
th{{background:#f0f4f5}}.refused{{color:#d5281b;font-weight:bold}}.seen{{color:#007f3b}}
</style></head>
<body>
<h1>Who has seen your records</h1>
<p>Report for NHS number {escape(report.nhs_number)}, produced {escape(local_time(report.generated.isoformat()))}.
Times are UK time (GMT in winter, BST in summer).</p>
<h2>Organisations that hold documents about you</h2>
<table><thead><tr><th>Organisation</th><th>Documents</th></tr></thead><tbody>{holders}</tbody></table>
<h2>Every time someone looked at your records, or tried to</h2>
<table><thead><tr><th>When</th><th>Organisation</th><th>Who</th><th>What</th><th>Result</th><th>Why refused</th></tr></thead>
<tbody>{accesses}</tbody></table>
<p>"Refused" means the exchange did not let them see it; the last column says why.</p>
</body></html>
"""
