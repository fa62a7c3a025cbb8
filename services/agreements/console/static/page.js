// What the DCC and the patient page share: sign-in (session.js), the API with the signed-in person's
// token, the words for codes (vocabulary.json), a status line whose old errors clear, and small DOM helpers.
"use strict";
import { Session } from "./session.js";

export const $ = (id) => document.getElementById(id);
export let session = null;
export let words = { purposes: {}, categories: {}, organisationKinds: {} };

export function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

// One status line: a new action clears what the last one said, so an old error never lingers.
export function say(message, isError) {
  $("status").textContent = message || "";
  $("status").className = isError ? "error" : "";
}

export async function api(method, path, body, contentType) {
  const headers = { Accept: "application/fhir+json" };
  if (body !== undefined) headers["Content-Type"] = contentType || "application/fhir+json";
  let response;
  try {
    response = await session.fetch(path, { method, headers,
      body: body === undefined ? undefined : (typeof body === "string" || body instanceof Blob ? body : JSON.stringify(body)) });
  } catch (err) {
    throw new Error("The exchange could not be reached. Check your connection and try again.");
  }
  const type = response.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await response.json() : await response.blob();
  if (!response.ok) {
    const issue = data && data.issue && data.issue[0];
    throw new Error(issue ? (issue.diagnostics || (issue.details || {}).text) : ("HTTP " + response.status));
  }
  return data;
}

export const entries = (bundle) => (bundle.entry || []).map((e) => e.resource);

export function row(table, cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell === undefined || cell === null ? "" : String(cell);
    tr.appendChild(td);
  }
  $(table).querySelector("tbody").appendChild(tr);
  return tr;
}

export function clear(table) { $(table).querySelector("tbody").replaceChildren(); }

// Runs an action from a button or form: clears the status first, says the error if it fails.
export async function act(work) {
  say("");
  try { await work(); } catch (err) { say(err.message, true); }
}

export function button(label, onClick, attrs, style) {
  const b = el("button", label, { type: "button", ...(attrs || {}) });
  if (style) b.className = style;
  b.addEventListener("click", async () => {
    b.disabled = true;
    try { await act(onClick); } finally { b.disabled = false; }
  });
  return b;
}

export const purposeWords = (code) => words.purposes[code] || code;
export const categoryWords = (code) => words.categories[code] || code.replace(/-/g, " ");
export const kindWords = (code) => words.organisationKinds[code] || code;

export function checkboxes(fieldset, name, labels) {
  for (const [value, label] of Object.entries(labels)) {
    const box = el("input", null, { type: "checkbox", name, value });
    const wrap = el("label");
    wrap.append(box, " " + label);
    $(fieldset).append(wrap);
  }
}

function showSignIn(message) {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-message").textContent = message || "";
  $("signin-link").href = session.signInUrl;
}

// Signs the person in (or offers the sign-in), loads the words, and hands over to the page.
export async function start(page, { allowed, ready }) {
  session = new Session({
    page,
    notRenewed: "Your sign-in could not be renewed, so the page can no longer read or change anything. Sign in again to carry on.",
    onEnded: (message) => {
      const banner = $("session-ended");
      banner.replaceChildren(document.createTextNode(message + " "));
      const link = el("a", "Sign in again", { href: session.signInUrl });
      banner.appendChild(link);
      banner.hidden = false;
    },
  });
  $("signout").addEventListener("click", () => session.signOut());
  const begun = await session.begin();
  if (!begun.ok) { showSignIn(begun.message); return; }
  const refusal = allowed(session.claims);
  if (refusal) { showSignIn(refusal); return; }
  $("signin").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  try {
    const response = await fetch(page + "static/vocabulary.json");
    if (response.ok) words = await response.json();
  } catch (err) { /* codes are shown as they are */ }
  await act(ready);
}
