// The patient's page, and their carer's: who holds records about the patient, the patient's sharing
// preferences and carers, and who has looked at the records (the audit service's access report).
// A carer reads it about the person they care for, so the page speaks of "their" records, not "your".
"use strict";
import { $, act, api, button, categoryWords, checkboxes, clear, el, entries, row, say, session, start, words } from "./page.js";

const HOLDING = "https://lhcie.london/fhir/StructureDefinition/record-holding";
const ODS = "https://fhir.nhs.uk/Id/ods-organization-code";
// London time with its zone named (GMT or BST): the patient reads when, not a UTC offset.
const LONDON = { timeZone: "Europe/London", day: "numeric", month: "short", year: "numeric", hour: "2-digit",
  minute: "2-digit", timeZoneName: "short" };
const names = new Map();  // ODS code -> organisation name, from what the API returned
const people = new Map(); // a carer's login subject -> their name (the patient's RelatedPersons)
let carer = false;
let patient = null;      // the NHS number a carer asked about (digits only)

const orgName = (code) => names.get(code) || code;
const patientParam = () => carer ? "?patient=" + encodeURIComponent(patient || "") : "";

function holding(resource, name) {
  const found = (resource.extension || []).find((x) => x.url === HOLDING);
  return found ? found.extension.filter((x) => x.url === name).map((x) => x.valueInteger ?? x.valueCode ?? x.valueDateTime) : [];
}

// Everything about one patient goes when the carer names another (or is refused): nothing stale stays.
function forget() {
  for (const table of ["holders", "carers"]) clear(table);
  $("access-report").replaceChildren();
  $("exceptions").replaceChildren();
  $("optout-orgs").querySelectorAll("label.org").forEach((n) => n.remove());
  $("holders-empty").hidden = true;
  $("access-zone").hidden = true;
}

async function loadHolders() {
  clear("holders");
  const found = entries(await api("GET", "/fhir/Organization/$record-holders" + patientParam()));
  $("holders-empty").hidden = found.length > 0;
  for (const o of found) {
    names.set(o.id, o.name);
    const last = holding(o, "lastStored")[0];
    row("holders", [o.name, holding(o, "documents")[0], holding(o, "category").map(categoryWords).join("; "),
      last ? new Date(last).toLocaleDateString("en-GB", { timeZone: "Europe/London", dateStyle: "medium" }) : ""])
      .dataset.org = o.id;
  }
  return found;
}

function orgBox(code) {
  const existing = $("optout-orgs").querySelector(`input[value="${CSS.escape(code)}"]`);
  if (existing) return existing;
  const box = el("input", null, { type: "checkbox", name: "optout-org", value: code });
  box.disabled = carer;
  const label = el("label", null, { class: "org" });
  label.append(box, " " + orgName(code));
  $("optout-other").before(label);
  $("optout-orgs-empty").hidden = true;
  return box;
}

async function loadPreferences(holders) {
  const consent = await api("GET", "/fhir/Consent/preferences" + patientParam());
  const rules = consent.provision.provision || [];
  const cats = rules.flatMap((r) => r["class"] || []).map((c) => c.code);
  const refused = rules.flatMap((r) => r.actor || []).map((a) => a.reference);
  for (const ref of refused) if (ref.display) names.set(ref.identifier.value, ref.display);
  for (const box of document.querySelectorAll("input[name=optout]")) box.checked = cats.includes(box.value);
  // The organisations a patient might not want to share with: those that hold records, and any already refused.
  for (const o of holders) orgBox(o.id).checked = false;
  for (const ref of refused) orgBox(ref.identifier.value).checked = true;
  $("exceptions").replaceChildren(...consent.policyRule.text.split(/(?<=\.) /).map((t) => el("li", t)));
}

async function savePreferences() {
  const cats = [...document.querySelectorAll("input[name=optout]:checked")].map((i) => i.value);
  const orgs = [...document.querySelectorAll("input[name=optout-org]:checked")].map((i) => i.value);
  const other = $("pref-other").value.trim().toUpperCase();
  if (other && !orgs.includes(other)) orgs.push(other);
  const deny = [];
  if (cats.length) deny.push({ type: "deny", "class": cats.map((code) => ({ system: "https://lhcie.london/fhir/CodeSystem/document-category", code })) });
  for (const o of orgs) deny.push({ type: "deny", actor: [{ role: { text: "recipient" }, reference: { identifier: { system: ODS, value: o } } }] });
  await api("PUT", "/fhir/Consent/preferences", { resourceType: "Consent", status: "active", provision: { type: "permit", provision: deny } });
  $("pref-other").value = "";
  say("Preferences saved.");
  await loadPreferences([]);
}

async function loadCarers() {
  clear("carers");
  for (const p of entries(await api("GET", "/fhir/RelatedPerson" + patientParam()))) {
    people.set(p.identifier[0].value, p.name[0].text);
    const cell = p.active && !carer
      ? button("Revoke", async () => { await api("POST", `/fhir/RelatedPerson/${p.id}/$revoke`); await loadCarers(); },
        { "data-action": "revoke-carer", "data-id": p.id }, "danger")
      : el("span");
    row("carers", [p.name[0].text, p.identifier[0].value, (p.relationship || [{}])[0].text, p.active ? "active" : "revoked", cell])
      .dataset.id = p.id;
  }
}

async function grantCarer() {
  const person = { resourceType: "RelatedPerson",
    identifier: [{ system: "https://lhcie.london/fhir/Id/login-subject", value: $("carer-subject").value.trim() }],
    name: [{ text: $("carer-name").value.trim() }] };
  if ($("carer-relationship").value.trim()) person.relationship = [{ text: $("carer-relationship").value.trim() }];
  await api("POST", "/fhir/RelatedPerson", person);
  $("carer-form").reset();
  say("Carer added.");
  await loadCarers();
}

// One access in plain words: when (London time, zone named), which organisation, what it did to which document.
function described(e) {
  const agents = e.agent || [];
  const organisation = agents.find((a) => ((a.type || {}).coding || []).some((c) => c.code === "PROV")) || agents[0] || {};
  const person = agents.find((a) => a.requestor && a.role);
  const role = person ? ((person.role[0] || {}).coding || [{}])[0].code : null;
  const code = ((organisation.who || {}).identifier || {}).value;
  const subject = person && person.who ? person.who.display : null;
  const named = subject ? ` (${people.get(subject) || subject})` : "";
  const by = role === "carer" ? (carer ? "a carer" : "your carer") + named
    : role === "patient" ? (carer ? "the patient" : "you")
    : code ? orgName(code) : (organisation.who || {}).display;
  const event = ((e.subtype || [])[1] || {}).code;
  const documentEntity = (e.entity || []).map((x) => x.what || {}).find((w) => (w.reference || "").startsWith("DocumentReference/"));
  const whose = carer ? "their" : "your";
  const doc = documentEntity ? (documentEntity.display ? `${whose} ${documentEntity.display.toLowerCase()}` : `one of ${whose} documents`) : `${whose} records`;
  const what = {
    "document.retrieved": `opened ${doc}`,
    "access.denied": `asked to see ${doc} and was refused`,
    "document.searched": `searched ${whose} documents`,
    "record.read": `looked at ${whose} records`,
  }[event] || (e.type || {}).display;
  const when = new Date(e.recorded || e.period.start).toLocaleString("en-GB", LONDON);
  return [when, by, what].filter(Boolean).join(" – ");
}

async function loadAccessReport() {
  const report = await api("GET", "/fhir/AuditEvent/$access-report" + patientParam());
  for (const o of entries(report).filter((r) => r.resourceType === "Organization" && r.name)) names.set(o.id, o.name);
  const list = $("access-report");
  list.replaceChildren();
  const events = entries(report).filter((r) => r.resourceType === "AuditEvent");
  if (!events.length) list.append(el("li", `No one has looked at ${carer ? "their" : "your"} records through the exchange.`));
  for (const e of events) list.append(el("li", described(e)));
  $("access-zone").hidden = false;
}

// The audit service's full report (HTML) fetched with the person's token: a plain link would carry no
// token and answer 401. Its body is shown here, styled by this page; the file can be downloaded as it is.
async function showFullReport() {
  const response = await session.fetch("/fhir/AuditEvent/$access-report" + patientParam() + (carer ? "&" : "?") + "_format=html");
  if (!response.ok) throw new Error(`The full report could not be fetched (${response.status}).`);
  const html = await response.text();
  const parsed = new DOMParser().parseFromString(html, "text/html");
  parsed.querySelectorAll("script, style, link").forEach((n) => n.remove());
  $("report-body").replaceChildren(...[...parsed.body.childNodes].map((n) => document.importNode(n, true)));
  const link = $("report-download");
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(new Blob([html], { type: "text/html" }));
  link.hidden = false;
  if (!$("report").open) $("report").showModal();
}

async function refresh() {
  const holders = await loadHolders();
  await Promise.all([loadPreferences(holders), loadCarers()]);
}

async function choosePatient() {
  forget();
  const digits = $("patient-input").value.replace(/[\s-]/g, "");
  if (!/^\d{10}$/.test(digits)) { patient = null; throw new Error("An NHS number has 10 digits, for example 900 000 0009."); }
  patient = digits;
  await refresh();
}

start("/patient/", {
  allowed: (claims) => ["patient", "carer"].includes(claims.role) ? null
    : "You are signed in, but not as a patient or a carer: this page is for people to see their own records.",
  ready: async () => {
    carer = session.claims.role === "carer";
    if (carer) {
      document.querySelectorAll("[data-carer]").forEach((node) => { node.textContent = node.dataset.carer; });
      document.title = "Their records on the London exchange · LHCIE";
    }
    $("who").textContent = carer ? `${session.name} · carer` : session.name;
    checkboxes("optout", "optout", words.categories);
    $("patient-choice").hidden = !carer;
    $("prefs-carer").hidden = !carer;
    $("pref-save").hidden = carer;
    $("carer-form").hidden = carer;
    $("optout-other").hidden = carer;
    document.querySelectorAll("input[name=optout]").forEach((box) => { box.disabled = carer; });
    $("patient-form").addEventListener("submit", (event) => { event.preventDefault(); act(choosePatient); });
    $("pref-save").addEventListener("click", () => act(savePreferences));
    $("carer-form").addEventListener("submit", (event) => { event.preventDefault(); act(grantCarer); });
    $("access-load").addEventListener("click", () => act(async () => {
      if (carer && !patient) throw new Error("Enter the NHS number of the person you care for first.");
      await loadAccessReport();
    }));
    $("access-full").addEventListener("click", () => act(async () => {
      if (carer && !patient) throw new Error("Enter the NHS number of the person you care for first.");
      await showFullReport();
    }));
    $("report-close").addEventListener("click", () => $("report").close());
    if (!carer) await refresh();
  },
});
