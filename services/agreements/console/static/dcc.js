// The Data Controller Console: an organisation's information sharing agreements (ISAs). Decide what waits
// on you (reading the signed PDF first), revoke or leave with a recorded reason, upload a countersigned
// copy, join standard agreements, rationalise duplicates, propose agreements and register organisations.
"use strict";
import { $, act, api, button, categoryWords, checkboxes, clear, el, entries, kindWords, purposeWords, row, say,
  session, start, words } from "./page.js";
import { initDecision, decide } from "./decision.js";

const STATUS = { offered: "proposed", executed: "accepted", rejected: "rejected", revoked: "revoked", terminated: "expired" };
const EXT = "https://lhcie.london/fhir/StructureDefinition/";
const names = new Map();  // ODS code -> organisation name
let me = null;

const orgName = (code) => names.get(code) || code;
const parties = (c) => (c.authority || []).map((a) => a.identifier.value);
const purposes = (c) => ((c.scope || {}).coding || []).map((p) => purposeWords(p.code)).join("; ");
const categoryCodes = (c) => (c.term || []).flatMap((t) => t.asset).flatMap((a) => a.type).flatMap((t) => t.coding).map((x) => x.code);
const categories = (c) => categoryCodes(c).map(categoryWords).join("; ") || "all kinds of document";
const signed = (c) => (c.signer || []).map((s) => s.party.identifier.value);
const isTemplate = (c) => (c.extension || []).some((x) => x.url === EXT + "template-agreement" && x.valueBoolean);
const admits = (c) => { const e = (c.extension || []).find((x) => x.url === EXT + "template-admits-organisation-type"); return e ? e.valueCode : ""; };
const joinRequests = (c) => (c.extension || []).filter((x) => x.url === EXT + "join-request")
  .map((x) => x.extension.find((y) => y.url === "organization").valueReference.identifier.value);
const namesOf = (codes) => codes.map(orgName).join(", ");

// The agreement's title, and the exchange's warning when no request could ever be admitted under it.
function titled(c) {
  const e = (c.extension || []).find((x) => x.url === EXT + "never-applies");
  const cell = el("span", c.title);
  if (e) cell.append(" ", el("strong", "\u26a0 " + e.valueString, { class: "never-applies", "data-id": c.id }));
  return cell;
}

// The last rejection, revocation or leaving, as "revoked by Royal Free (M. Jones): reason".
function lastDecision(c) {
  const found = (c.extension || []).filter((x) => x.url === EXT + "agreement-decision");
  if (!found.length) return null;
  const part = (name) => (found[found.length - 1].extension.find((y) => y.url === name) || {});
  const action = { reject: "rejected", revoke: "revoked", leave: "left" }[part("action").valueCode] || part("action").valueCode;
  const by = orgName(part("organization").valueReference.identifier.value) + (part("person").valueString ? ` (${part("person").valueString})` : "");
  return `${action} by ${by}` + (part("reason").valueString ? `: ${part("reason").valueString}` : "");
}

async function refresh() { await Promise.all([loadPending(), loadAgreements(), loadTemplates(), loadDuplicates()]); }

async function step(c, action, reason) {
  const body = reason === undefined ? undefined
    : { resourceType: "Parameters", parameter: [{ name: "reason", valueString: reason }] };
  await api("POST", `/fhir/Contract/${c.id}/$${action}`, body);
  await refresh();
}

// What a decision will stop, in the data controller's words, before they confirm it.
function effect(c, action) {
  const others = parties(c).filter((p) => p !== me.org);
  const what = `${categories(c)} for ${purposes(c) || "the agreed purposes"}`;
  if (action === "reject")
    return `The proposal from ${orgName(c.author ? c.author.identifier.value : others[0])} ends: nothing will be shared under it, ` +
      `and ${namesOf(others)} will see your reason.`;
  if (isTemplate(c) && c.author && c.author.identifier.value !== me.org)
    return `${orgName(me.org)} leaves this standard agreement: from now on it can no longer share ${what} with ` +
      `${namesOf(others) || "its signatories"} under it, and requests that rely on it are refused. Documents already ` +
      `shared are not recalled.`;
  return `From now on ${namesOf(parties(c))} can no longer share ${what} under this agreement: every request that ` +
    `relies on it is refused from the moment you confirm. Documents already shared are not recalled. The other ` +
    `parties see your reason.`;
}

function confirmStep(c, action) {
  const leaving = isTemplate(c) && c.author && c.author.identifier.value !== me.org;
  const verb = action === "reject" ? "Reject" : leaving ? "Leave" : "Revoke";
  decide({
    title: `${verb} “${c.title}”?`, effect: effect(c, action), confirm: `${verb} agreement`,
    run: (reason) => step(c, action, reason),
  });
}

async function viewDocument(c) {
  const dialog = $("viewer");
  $("viewer-title").textContent = `Signed agreement: ${c.title}`;
  $("viewer-meta").textContent = "Loading…";
  $("viewer-frame").hidden = true;
  $("viewer-download").hidden = true;
  if (!dialog.open) dialog.showModal();
  const blob = await api("GET", `/fhir/Contract/${c.id}/$document`);
  const url = URL.createObjectURL(new Blob([blob], { type: "application/pdf" }));
  const attachment = c.legallyBindingAttachment || {};
  const by = (attachment.extension || []).find((x) => x.url === EXT + "attached-by");
  $("viewer-meta").textContent = [by && `Attached by ${orgName(by.valueReference.identifier.value)}`,
    attachment.creation && new Date(attachment.creation).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" }),
    attachment.size && `${Math.ceil(attachment.size / 1024)} KB`].filter(Boolean).join(" · ");
  $("viewer-frame").src = url;
  $("viewer-frame").hidden = false;
  $("viewer-download").href = url;
  $("viewer-download").download = `${c.id}.pdf`;
  $("viewer-download").hidden = false;
}

function pdfButton(c, label) {
  return button(label, () => viewDocument(c), { "data-action": "document", "data-id": c.id }, "secondary");
}

// A countersigned copy replaces the PDF an agreement holds: chosen, then uploaded in one click.
function uploadControl(c) {
  const wrap = el("span", null, { class: "upload" });
  const input = el("input", null, { type: "file", accept: "application/pdf", "aria-label": `Countersigned PDF for ${c.title}`,
    "data-action": "countersigned-file", "data-id": c.id });
  const send = button("Upload countersigned PDF", async () => {
    const file = input.files[0];
    if (!file) throw new Error("Choose the countersigned PDF first.");
    await api("PUT", `/fhir/Contract/${c.id}/$document`, file, "application/pdf");
    say(`Countersigned copy of “${c.title}” uploaded.`);
    await refresh();
  }, { "data-action": "countersign", "data-id": c.id }, "secondary");
  wrap.append(input, send);
  return wrap;
}

async function loadPending() {
  clear("pending");
  const found = entries(await api("GET", "/fhir/Contract/$pending"));
  $("pending-empty").hidden = found.length > 0;
  for (const c of found) {
    // A template of ours with organisations asking to join it: one row per request.
    for (const org of joinRequests(c)) {
      const cell = el("span");
      cell.append(
        button("Approve " + orgName(org), () => api("POST", `/fhir/Contract/${c.id}/$approve-join`, joinBody(org)).then(refresh),
          { "data-action": "approve-join", "data-id": c.id, "data-org": org }),
        button("Refuse " + orgName(org), () => api("POST", `/fhir/Contract/${c.id}/$reject-join`, joinBody(org)).then(refresh),
          { "data-action": "reject-join", "data-id": c.id, "data-org": org }, "danger"));
      row("pending", [`${c.title} (${orgName(org)} asks to join)`, namesOf(parties(c)), purposes(c), categories(c),
        c.author ? orgName(c.author.identifier.value) : "", namesOf(signed(c)), cell]);
    }
    if (joinRequests(c).length) continue;
    const cell = el("span");
    if (c.legallyBindingAttachment) cell.append(pdfButton(c, "Read signed PDF"));
    else cell.append(el("span", "No signed PDF attached ", { class: "muted" }));
    cell.append(
      button("Accept", () => step(c, "accept"), { "data-action": "accept", "data-id": c.id }),
      button("Reject", async () => confirmStep(c, "reject"), { "data-action": "reject", "data-id": c.id }, "danger"));
    const tr = row("pending", [titled(c), namesOf(parties(c)), purposes(c), categories(c),
      c.author ? orgName(c.author.identifier.value) : "", namesOf(signed(c)), cell]);
    tr.dataset.id = c.id;
  }
}

const joinBody = (org) => ({ resourceType: "Parameters", parameter: [{ name: "organization", valueReference: { reference: "Organization/" + org } }] });

async function loadAgreements() {
  clear("agreements");
  const org = $("org-select").value;
  const found = entries(await api("GET", "/fhir/Contract?party=" + encodeURIComponent(org) + "&_count=200"));
  for (const c of found) {
    const actions = el("span");
    const status = STATUS[c.status] || c.status;
    const live = status === "accepted" || status === "proposed";
    if (parties(c).includes(me.org) && live) {
      const leaving = isTemplate(c) && c.author && c.author.identifier.value !== me.org;
      actions.append(button(leaving ? "Leave" : "Revoke", async () => confirmStep(c, "revoke"),
        { "data-action": "revoke", "data-id": c.id }, "danger"));
    }
    if (c.legallyBindingAttachment && parties(c).includes(me.org)) actions.append(pdfButton(c, "Signed PDF"));
    if (parties(c).includes(me.org) && live) actions.append(uploadControl(c));
    const statusCell = el("span", status);
    const decision = lastDecision(c);
    if (decision) statusCell.append(el("span", decision, { class: "reason" }));
    const tr = row("agreements", [c.id, titled(c), statusCell, namesOf(parties(c)), purposes(c), categories(c),
      c.applies && c.applies.end ? c.applies.end.slice(0, 10) : "", actions]);
    tr.dataset.id = c.id;
  }
}

async function loadTemplates() {
  clear("templates");
  for (const c of entries(await api("GET", "/fhir/Contract/$templates"))) {
    const cell = parties(c).includes(me.org) ? el("span", "joined")
      : joinRequests(c).includes(me.org) ? el("span", "waiting for " + orgName(c.author.identifier.value) + " to approve")
      : button("Join", () => step(c, "join"), { "data-action": "join", "data-id": c.id });
    const who = admits(c) ? `any ${kindWords(admits(c))} at once; others on approval` : "on the owner's approval";
    row("templates", [c.title, namesOf(parties(c)), purposes(c), who, cell]);
  }
}

async function loadDuplicates() {
  clear("duplicates");
  const found = (await api("GET", "/fhir/Contract/$duplicates")).parameter || [];
  for (const p of found) {
    const ids = p.part.filter((x) => x.name === "agreement").map((x) => x.valueReference.reference.split("/")[1]);
    const cell = el("span");
    for (const [retired, kept] of [[ids[0], ids[1]], [ids[1], ids[0]]])
      cell.append(button(`Retire ${retired} (keep ${kept})`, async () => {
        await api("POST", `/fhir/Contract/${retired}/$retire`,
          { resourceType: "Parameters", parameter: [{ name: "replacedBy", valueReference: { reference: "Contract/" + kept } }] });
        await refresh();
      }, { "data-action": "retire", "data-id": retired }, "danger"));
    cell.append(button("Propose merged ISA", async () => {
      await api("POST", "/fhir/Contract/$merge", { resourceType: "Parameters", parameter:
        ids.map((i) => ({ name: "agreement", valueReference: { reference: "Contract/" + i } })) });
      await refresh();
    }, { "data-action": "merge" }));
    row("duplicates", [ids.join(" and "), namesOf(p.part.filter((x) => x.name === "party").map((x) => x.valueString)),
      p.part.filter((x) => x.name === "purpose").map((x) => purposeWords(x.valueCode)).join("; "), cell]);
  }
}

async function propose() {
  const other = $("propose-party").value;
  const chosen = [...document.querySelectorAll("input[name=purpose]:checked")].map((i) => i.value);
  const cats = [...document.querySelectorAll("input[name=category]:checked")].map((i) => i.value);
  const contract = { resourceType: "Contract", title: $("propose-title").value,
    authority: [me.org, other].filter(Boolean).map((o) => ({ identifier: { system: "https://fhir.nhs.uk/Id/ods-organization-code", value: o } })),
    scope: { coding: chosen.map((code) => ({ code })) } };
  if (cats.length) contract.term = [{ asset: [{ type: [{ coding: cats.map((code) => ({ code })) }] }] }];
  if ($("propose-end").value) contract.applies = { end: $("propose-end").value + "T00:00:00+00:00" };
  if ($("propose-template").checked) {
    contract.extension = [{ url: EXT + "template-agreement", valueBoolean: true }];
    if ($("propose-admits").value) contract.extension.push({ url: EXT + "template-admits-organisation-type", valueCode: $("propose-admits").value });
  }
  const made = await api("POST", "/fhir/Contract", contract);
  const file = $("propose-pdf").files[0];
  if (file) await api("PUT", `/fhir/Contract/${made.id}/$document`, file, "application/pdf");
  say(`Proposed “${made.title}” (${made.id}).`);
  await refresh();
}

async function register() {
  const ods = $("register-ods").value.trim().toUpperCase();
  const name = $("register-name").value.trim();
  if (!ods || !name || !$("register-kind").value) throw new Error("Give the organisation's ODS code, name and type.");
  const organisation = { resourceType: "Organization", active: true,
    identifier: [{ system: "https://fhir.nhs.uk/Id/ods-organization-code", value: ods }], name,
    type: [{ coding: [{ system: "https://lhcie.london/fhir/CodeSystem/organisation-type", code: $("register-kind").value }] }] };
  const contact = $("register-contact").value.trim(), email = $("register-email").value.trim();
  if (contact || email) organisation.contact = [{ purpose: { text: "Data controller" },
    ...(contact ? { name: { text: contact } } : {}), ...(email ? { telecom: [{ system: "email", value: email }] } : {}) }];
  const made = await api("POST", "/fhir/Organization", organisation);
  $("register").reset();
  say(`Registered ${made.name} (${made.id}).`);
  await loadOrganisations();
}

async function loadOrganisations() {
  const orgs = entries(await api("GET", "/fhir/Organization?_count=200"));
  const current = $("org-select").value || me.org;
  $("org-select").replaceChildren();
  $("propose-party").replaceChildren(el("option", "(none: a template others join)", { value: "" }));
  for (const o of orgs) {
    names.set(o.id, o.name);
    $("org-select").append(el("option", `${o.name} (${o.id})`, { value: o.id }));
    if (o.id !== me.org) $("propose-party").append(el("option", `${o.name} (${o.id})`, { value: o.id }));
  }
  $("org-select").value = current;
}

start("/dcc/", {
  allowed: (claims) => claims.role === "dcc-admin" ? null
    : "You are signed in, but not as a data controller: this console is for your organisation's data controllers.",
  ready: async () => {
    me = session.claims;
    initDecision();
    $("viewer-close").addEventListener("click", () => $("viewer").close());
    checkboxes("propose-purposes", "purpose", words.purposes);
    checkboxes("propose-categories", "category", words.categories);
    for (const [code, label] of Object.entries(words.organisationKinds)) {
      $("propose-admits").append(el("option", "any " + label, { value: code }));
      $("register-kind").append(el("option", label, { value: code }));
    }
    $("register-kind").prepend(el("option", "(choose)", { value: "" }));
    $("register-kind").value = "";
    await loadOrganisations();
    $("who").textContent = `${session.name} · data controller, ${orgName(me.org)}`;
    $("pending-org").textContent = orgName(me.org);
    $("org-select").addEventListener("change", () => act(loadAgreements));
    $("propose-submit").addEventListener("click", () => act(propose));
    $("register").addEventListener("submit", (event) => { event.preventDefault(); act(register); });
    await refresh();
  },
});
