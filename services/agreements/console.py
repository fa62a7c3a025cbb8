"""The Data Controller Console (``/dcc/``) and the patient page (``/patient/``).

The HTML shell carries no data and needs no token (it is public); the page's script reads the user's
bearer token from the ``#token=`` fragment (``lhcie token ... --console`` prints such a link; a fragment
never reaches the server or a Referer) or from a pasted value, keeps it in sessionStorage, and calls the
FHIR API with it. Everything shown comes from the API under the caller's own permissions.
"""

from __future__ import annotations

import html
import secrets

from aiohttp import web

from services.agreements.resources import ORGANISATION_KINDS, PURPOSE_LABELS
from shared.policy import CATEGORIES

PATHS = ("/dcc/", "/patient/")

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#212b32;background:#f0f4f5}
header{background:#005eb8;color:#fff;padding:.8rem 1.5rem}header h1{margin:0;font-size:1.3rem}
main{padding:1rem 1.5rem;max-width:72rem}section{background:#fff;padding:1rem;margin:0 0 1rem;border-radius:4px}
h2{margin-top:0;font-size:1.1rem}table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #d8dde0;vertical-align:top}
button{background:#007f3b;color:#fff;border:0;padding:.3rem .7rem;border-radius:3px;cursor:pointer;margin:.1rem}
button.danger{background:#d5281b}.muted{color:#4c6272}#status{min-height:1.2rem;color:#d5281b}
label{margin-right:1rem}input[type=text],input[type=date],select,textarea{padding:.25rem;margin:.15rem 0}
"""

_COMMON_JS = r"""
const TOKEN_KEY = "lhcie-token";
function takeToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);  // keep the token out of history
  }
  return sessionStorage.getItem(TOKEN_KEY);
}
function claims(token) {
  try { return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); }
  catch (e) { return null; }
}
const token = takeToken();
const me = token ? claims(token) : null;
function $(id) { return document.getElementById(id); }
function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function say(message) { $("status").textContent = message || ""; }
async function api(method, path, body, contentType) {
  const headers = {"Authorization": "Bearer " + sessionStorage.getItem(TOKEN_KEY), "Accept": "application/fhir+json"};
  if (body !== undefined) headers["Content-Type"] = contentType || "application/fhir+json";
  const response = await fetch(path, {method, headers,
    body: body === undefined ? undefined : (typeof body === "string" || body instanceof Blob ? body : JSON.stringify(body))});
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) {
    const issue = data && data.issue && data.issue[0];
    throw new Error(issue ? issue.diagnostics : ("HTTP " + response.status));
  }
  return data;
}
function entries(bundle) { return (bundle.entry || []).map(e => e.resource); }
function row(table, cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === undefined || cell === null ? "" : String(cell);
    tr.appendChild(td);
  }
  $(table).querySelector("tbody").appendChild(tr);
  return tr;
}
function clear(table) { $(table).querySelector("tbody").replaceChildren(); }
function button(label, onClick, attrs, danger) {
  const b = el("button", label, attrs || {});
  if (danger) b.className = "danger";
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await onClick(); say(""); } catch (e) { say(e.message); } finally { b.disabled = false; }
  });
  return b;
}
function setup(start) {
  $("token-save").addEventListener("click", () => {
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    location.reload();
  });
  $("sign-out").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
  if (!token || !me) { $("signin").hidden = false; $("app").hidden = true; return; }
  $("signin").hidden = true; $("app").hidden = false;
  $("whoami").textContent = me.sub + " (" + me.role + ", " + me.org + ")";
  start().catch(e => say(e.message));
}
"""

_DCC_JS = r"""
const STATUS = {offered: "proposed", executed: "accepted", rejected: "rejected", revoked: "revoked", terminated: "expired"};
function parties(c) { return (c.authority || []).map(a => a.identifier.value); }
function purposes(c) { return ((c.scope || {}).coding || []).map(p => p.code).join(", "); }
function categories(c) { return (c.term || []).flatMap(t => t.asset).flatMap(a => a.type).flatMap(t => t.coding).map(x => x.code).join(", ") || "all"; }
function signed(c) { return (c.signer || []).map(s => s.party.identifier.value); }
const EXT = "https://lhcie.london/fhir/StructureDefinition/";
function admits(c) { const e = (c.extension || []).find(x => x.url === EXT + "template-admits-organisation-type"); return e ? e.valueCode : ""; }
function joinRequests(c) {
  return (c.extension || []).filter(x => x.url === EXT + "join-request")
    .map(x => x.extension.find(y => y.url === "organization").valueReference.identifier.value);
}
async function decideJoin(id, org, action) {
  await api("POST", "/fhir/Contract/" + id + "/$" + action,
    {resourceType: "Parameters", parameter: [{name: "organization", valueReference: {reference: "Organization/" + org}}]});
  await refresh();
}
async function act(id, action) { await api("POST", "/fhir/Contract/" + id + "/$" + action); await refresh(); }
async function download(c) {
  const blob = await api("GET", "/fhir/Contract/" + c.id + "/$document");
  window.open(URL.createObjectURL(blob), "_blank");
}
async function loadPending() {
  clear("pending");
  const found = entries(await api("GET", "/fhir/Contract/$pending"));
  $("pending-empty").hidden = found.length > 0;
  for (const c of found) {
    // A template of ours with organisations asking to join it: one row per request.
    for (const org of joinRequests(c))
      row("pending", [c.title + " (" + org + " asks to join)", parties(c).join(", "), purposes(c), categories(c),
        c.author ? c.author.identifier.value : "", signed(c).join(", "), el("span")]).lastChild.append(
          button("Approve " + org, () => decideJoin(c.id, org, "approve-join"), {"data-action": "approve-join", "data-id": c.id, "data-org": org}),
          button("Refuse " + org, () => decideJoin(c.id, org, "reject-join"), {"data-action": "reject-join", "data-id": c.id, "data-org": org}, true));
    if (joinRequests(c).length) continue;
    row("pending", [c.title, parties(c).join(", "), purposes(c), categories(c), c.author ? c.author.identifier.value : "",
      signed(c).join(", "),
      el("span")]).lastChild.append(
        button("Accept", () => act(c.id, "accept"), {"data-action": "accept", "data-id": c.id}),
        button("Reject", () => act(c.id, "reject"), {"data-action": "reject", "data-id": c.id}, true));
  }
}
async function loadAgreements() {
  clear("agreements");
  const org = $("org-select").value;
  const found = entries(await api("GET", "/fhir/Contract?party=" + encodeURIComponent(org) + "&_count=200"));
  for (const c of found) {
    const actions = el("span");
    const status = STATUS[c.status] || c.status;
    if (parties(c).includes(me.org) && (status === "accepted" || status === "proposed"))
      actions.append(button(c.extension && c.author && c.author.identifier.value !== me.org ? "Leave" : "Revoke",
        () => act(c.id, "revoke"), {"data-action": "revoke", "data-id": c.id}, true));
    if (c.legallyBindingAttachment) actions.append(button("Signed PDF", () => download(c), {"data-action": "document", "data-id": c.id}));
    const tr = row("agreements", [c.id, c.title, status, parties(c).join(", "), purposes(c), categories(c),
      c.applies && c.applies.end ? c.applies.end.slice(0, 10) : "", actions]);
    tr.setAttribute("data-id", c.id);
  }
}
async function loadTemplates() {
  clear("templates");
  for (const c of entries(await api("GET", "/fhir/Contract/$templates"))) {
    const cell = parties(c).includes(me.org) ? el("span", "joined")
      : joinRequests(c).includes(me.org) ? el("span", "waiting for " + c.author.identifier.value + " to approve")
      : button("Join", () => act(c.id, "join"), {"data-action": "join", "data-id": c.id});
    const who = admits(c) ? "any " + admits(c) + " at once; others on approval" : "on the owner's approval";
    row("templates", [c.title, parties(c).join(", "), purposes(c), who, cell]);
  }
}
async function loadDuplicates() {
  clear("duplicates");
  const found = (await api("GET", "/fhir/Contract/$duplicates")).parameter || [];
  for (const p of found) {
    const ids = p.part.filter(x => x.name === "agreement").map(x => x.valueReference.reference.split("/")[1]);
    const cell = el("span");
    for (const [retired, kept] of [[ids[0], ids[1]], [ids[1], ids[0]]])
      cell.append(button("Retire " + retired + " (keep " + kept + ")", async () => {
        await api("POST", "/fhir/Contract/" + retired + "/$retire",
          {resourceType: "Parameters", parameter: [{name: "replacedBy", valueReference: {reference: "Contract/" + kept}}]});
        await refresh();
      }, {"data-action": "retire", "data-id": retired}, true));
    cell.append(button("Propose merged ISA", async () => {
      await api("POST", "/fhir/Contract/$merge", {resourceType: "Parameters", parameter:
        ids.map(i => ({name: "agreement", valueReference: {reference: "Contract/" + i}}))});
      await refresh();
    }, {"data-action": "merge"}));
    row("duplicates", [ids.join(" and "), p.part.filter(x => x.name === "party").map(x => x.valueString).join(", "),
      p.part.filter(x => x.name === "purpose").map(x => x.valueCode).join(", "), cell]);
  }
}
async function propose() {
  const other = $("propose-party").value;
  const chosen = [...document.querySelectorAll("input[name=purpose]:checked")].map(i => i.value);
  const cats = [...document.querySelectorAll("input[name=category]:checked")].map(i => i.value);
  const contract = {resourceType: "Contract", title: $("propose-title").value,
    authority: [me.org, other].filter(Boolean).map(o => ({identifier: {system: "https://fhir.nhs.uk/Id/ods-organization-code", value: o}})),
    scope: {coding: chosen.map(code => ({code}))}};
  if (cats.length) contract.term = [{asset: [{type: [{coding: cats.map(code => ({code}))}]}]}];
  if ($("propose-end").value) contract.applies = {end: $("propose-end").value + "T00:00:00+00:00"};
  if ($("propose-template").checked) {
    contract.extension = [{url: EXT + "template-agreement", valueBoolean: true}];
    if ($("propose-admits").value) contract.extension.push({url: EXT + "template-admits-organisation-type", valueCode: $("propose-admits").value});
  }
  const made = await api("POST", "/fhir/Contract", contract);
  const file = $("propose-pdf").files[0];
  if (file) await api("PUT", "/fhir/Contract/" + made.id + "/$document", file, "application/pdf");
  say("Proposed " + made.id);
  await refresh();
}
async function refresh() { await Promise.all([loadPending(), loadAgreements(), loadTemplates(), loadDuplicates()]); }
setup(async () => {
  $("pending-org").textContent = me.org;
  const orgs = entries(await api("GET", "/fhir/Organization?_count=200"));
  for (const o of orgs) {
    const option = el("option", o.id + " - " + o.name, {value: o.id});
    $("org-select").append(option);
    if (o.id !== me.org) $("propose-party").append(el("option", o.id + " - " + o.name, {value: o.id}));
  }
  $("org-select").value = me.org;
  $("org-select").addEventListener("change", () => loadAgreements().catch(e => say(e.message)));
  $("propose-submit").addEventListener("click", () => propose().catch(e => say(e.message)));
  await refresh();
});
"""

_PATIENT_JS = r"""
function patientParam() { return me.role === "carer" ? "?patient=" + encodeURIComponent($("patient-input").value.trim()) : ""; }
function ext(resource, name) {
  const holding = (resource.extension || [])[0];
  return holding ? holding.extension.filter(x => x.url === name).map(x => x.valueInteger ?? x.valueCode ?? x.valueDateTime) : [];
}
async function loadHolders() {
  clear("holders");
  const found = entries(await api("GET", "/fhir/Organization/$record-holders" + patientParam()));
  $("holders-empty").hidden = found.length > 0;
  for (const o of found)
    row("holders", [o.name, o.id, ext(o, "documents")[0], ext(o, "category").join(", "), (ext(o, "lastStored")[0] || "").slice(0, 10)])
      .setAttribute("data-org", o.id);
}
async function loadPreferences() {
  const consent = await api("GET", "/fhir/Consent/preferences" + patientParam());
  const rules = consent.provision.provision || [];
  const cats = rules.flatMap(r => r["class"] || []).map(c => c.code);
  const orgs = rules.flatMap(r => r.actor || []).map(a => a.reference.identifier.value);
  for (const box of document.querySelectorAll("input[name=optout]")) box.checked = cats.includes(box.value);
  $("pref-orgs").value = orgs.join(", ");
  $("exceptions").replaceChildren(...consent.policyRule.text.split(/(?<=\.) /).map(t => el("li", t)));
}
async function savePreferences() {
  const cats = [...document.querySelectorAll("input[name=optout]:checked")].map(i => i.value);
  const orgs = $("pref-orgs").value.split(/[\s,]+/).filter(Boolean).map(o => o.toUpperCase());
  const deny = [];
  if (cats.length) deny.push({type: "deny", "class": cats.map(code => ({system: "https://lhcie.london/fhir/CodeSystem/document-category", code}))});
  for (const o of orgs) deny.push({type: "deny", actor: [{role: {text: "recipient"}, reference: {identifier: {system: "https://fhir.nhs.uk/Id/ods-organization-code", value: o}}}]});
  await api("PUT", "/fhir/Consent/preferences", {resourceType: "Consent", status: "active", provision: {type: "permit", provision: deny}});
  say("Preferences saved.");
  await loadPreferences();
}
async function loadCarers() {
  clear("carers");
  for (const p of entries(await api("GET", "/fhir/RelatedPerson" + patientParam()))) {
    const cell = p.active && me.role === "patient"
      ? button("Revoke", async () => { await api("POST", "/fhir/RelatedPerson/" + p.id + "/$revoke"); await loadCarers(); },
               {"data-action": "revoke-carer", "data-id": p.id}, true)
      : el("span");
    row("carers", [p.name[0].text, p.identifier[0].value, (p.relationship || [{}])[0].text, p.active ? "active" : "revoked", cell])
      .setAttribute("data-id", p.id);
  }
}
async function grantCarer() {
  const person = {resourceType: "RelatedPerson",
    identifier: [{system: "https://lhcie.london/fhir/Id/login-subject", value: $("carer-subject").value.trim()}],
    name: [{text: $("carer-name").value.trim()}]};
  if ($("carer-relationship").value.trim()) person.relationship = [{text: $("carer-relationship").value.trim()}];
  await api("POST", "/fhir/RelatedPerson", person);
  say("Carer added.");
  await loadCarers();
}
async function loadAccessReport() {
  const report = await api("GET", "/fhir/AuditEvent/$access-report" + patientParam());
  const list = $("access-report");
  list.replaceChildren();
  // The report is a Bundle of the patient, the record holders and one AuditEvent per access.
  const events = entries(report).filter(r => r.resourceType === "AuditEvent");
  if (!events.length) list.append(el("li", "No one has accessed your records through the exchange."));
  for (const e of events) {
    // The first agent is the organisation that asked (BALP lists the requester first).
    const who = ((e.agent || [])[0] || {}).who || {};
    // Say it in plain words: the LHCIE event type is always the second subtype.
    const event = ((e.subtype || [])[1] || {}).code;
    const what = {"document.retrieved": "opened one of your documents",
                  "access.denied": "asked to see a document and was refused",
                  "document.searched": "looked for your documents"}[event] || (e.type || {}).display;
    list.append(el("li", [(e.recorded || "").slice(0, 16).replace("T", " "), (who.identifier || {}).value || who.display,
      what].filter(Boolean).join(" - ")));
  }
}
async function refresh() { await Promise.all([loadHolders(), loadPreferences(), loadCarers()]); }
setup(async () => {
  const patientRole = me.role === "patient";
  $("patient-choice").hidden = patientRole;
  $("pref-save").hidden = !patientRole;
  $("carer-form").hidden = !patientRole;
  for (const box of document.querySelectorAll("input[name=optout]")) box.disabled = !patientRole;
  $("pref-orgs").disabled = !patientRole;
  $("pref-save").addEventListener("click", () => savePreferences().catch(e => say(e.message)));
  $("carer-grant").addEventListener("click", () => grantCarer().catch(e => say(e.message)));
  $("patient-load").addEventListener("click", () => refresh().catch(e => say(e.message)));
  $("access-load").addEventListener("click", () => loadAccessReport().catch(e => say(e.message)));
  if (patientRole) await refresh();
});
"""

_SIGNIN = """
<section id="signin" hidden>
  <h2>Sign in</h2>
  <p>Paste your bearer token (for the embedded run: <code>lhcie token --org RJ1 --role dcc-admin --console</code>
  prints a link that signs you in).</p>
  <textarea id="token-input" rows="3" cols="80" aria-label="token"></textarea><br>
  <button id="token-save">Use this token</button>
</section>
"""


def _table(table_id: str, headings: tuple[str, ...]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    return f'<table id="{table_id}"><thead><tr>{cells}</tr></thead><tbody></tbody></table>'


def _checkboxes(name: str, values: tuple[str, ...], labels: dict[str, str] | None = None) -> str:
    return "".join(
        f'<label><input type="checkbox" name="{name}" value="{html.escape(v)}"> {html.escape((labels or {}).get(v, v))}</label>'
        for v in values
    )


def _page(title: str, body: str, script: str, nonce: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title><style nonce="{nonce}">{_STYLE}</style></head>
<body><header><h1>{html.escape(title)}</h1></header><main>
<p id="status" role="status"></p>{_SIGNIN}
<div id="app" hidden><p class="muted">Signed in as <span id="whoami"></span> <button id="sign-out">Sign out</button></p>
{body}</div></main>
<script nonce="{nonce}">{_COMMON_JS}{script}</script></body></html>"""


def dcc_page(nonce: str) -> str:
    body = f"""
<section><h2>Pending on <span id="pending-org"></span></h2>
<p id="pending-empty" class="muted" hidden>Nothing is waiting for your decision.</p>
{_table("pending", ("Agreement", "Parties", "Purposes", "Categories", "Proposed by", "Signed by", ""))}</section>
<section><h2>Agreements by organisation</h2>
<label>Organisation <select id="org-select"></select></label>
{_table("agreements", ("Id", "Agreement", "Status", "Parties", "Purposes", "Categories", "Ends", ""))}</section>
<section><h2>Standard (template) agreements</h2>
{_table("templates", ("Agreement", "Signatories", "Purposes", "Who may join", ""))}</section>
<section><h2>Possible duplicates</h2>
{_table("duplicates", ("Agreements", "Parties in common", "Purposes in common", ""))}</section>
<section><h2>Propose an agreement</h2>
<p><label>Title <input type="text" id="propose-title" size="50"></label></p>
<p><label>With <select id="propose-party"><option value="">(none: a template others join)</option></select></label>
<label><input type="checkbox" id="propose-template"> template agreement</label>
<label>that admits without approval <select id="propose-admits"><option value="">(nobody: I approve each)</option>
{"".join(f'<option value="{k}">any {k}</option>' for k in ORGANISATION_KINDS)}</select></label></p>
<p>Purposes: {_checkboxes("purpose", tuple(PURPOSE_LABELS), PURPOSE_LABELS)}</p>
<p>Document categories (none ticked: all): {_checkboxes("category", CATEGORIES)}</p>
<p><label>Ends <input type="date" id="propose-end"></label>
<label>Signed agreement (PDF) <input type="file" id="propose-pdf" accept="application/pdf"></label></p>
<button id="propose-submit">Propose</button></section>
<p class="muted">Organisation types: {html.escape(", ".join(ORGANISATION_KINDS))}.</p>"""
    return _page("LHCIE Data Controller Console", body, _DCC_JS, nonce)


def patient_page(nonce: str) -> str:
    body = f"""
<section id="patient-choice" hidden><h2>Whose records</h2>
<label>NHS number of the person you care for <input type="text" id="patient-input" size="12"></label>
<button id="patient-load">Show</button></section>
<section><h2>Organisations that hold records about you</h2>
<p id="holders-empty" class="muted" hidden>No organisation has shared a record about you through the exchange.</p>
{_table("holders", ("Organisation", "ODS code", "Documents", "Kinds of document", "Most recent"))}</section>
<section><h2>Your sharing preferences</h2>
<p>Do not share these kinds of document: {_checkboxes("optout", CATEGORIES)}</p>
<p><label>Do not share with these organisations (ODS codes) <input type="text" id="pref-orgs" size="30"></label></p>
<button id="pref-save">Save preferences</button>
<p class="muted">What your preferences cannot stop:</p><ul id="exceptions"></ul></section>
<section><h2>People who can see this on your behalf</h2>
{_table("carers", ("Name", "Login", "Relationship", "Status", ""))}
<div id="carer-form"><p><label>Their login <input type="text" id="carer-subject"></label>
<label>Name <input type="text" id="carer-name"></label>
<label>Relationship <input type="text" id="carer-relationship"></label>
<button id="carer-grant">Give access</button></p></div></section>
<section><h2>Who has looked at your records</h2>
<p>Your access report (<a id="access-link" href="/fhir/AuditEvent/$access-report">/fhir/AuditEvent/$access-report</a>,
served by the audit service) lists every time an organisation opened one of your documents.</p>
<button id="access-load">Show my access report</button><ul id="access-report"></ul></section>"""
    return _page("Your records on the London exchange", body, _PATIENT_JS, nonce)


def _serve(render: object) -> object:
    async def handler(request: web.Request) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        return web.Response(text=render(nonce), content_type="text/html", headers={  # type: ignore[operator]
            "Content-Security-Policy": (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                                        "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; "
                                        "base-uri 'none'; form-action 'none'"),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        })

    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dcc/", _serve(dcc_page))  # type: ignore[arg-type]
    app.router.add_get("/patient/", _serve(patient_page))  # type: ignore[arg-type]
