// The coordinator console: the MDT's alerts by urgency, live all day over SSE, acknowledged with one
// click, documents opened in place, and the patient tracking list. Sign-in and token renewal live in
// session.js, the stream and its reconnection in live.js.
"use strict";
import { Session } from "./session.js";
import { Live } from "./live.js";
import { openDocument, initViewer } from "./viewer.js";
import { loadTracking, downloadCsv, clockBadge } from "./tracking.js";
import { openPathway, initPathway } from "./pathway.js";

const $ = (id) => document.getElementById(id);
const RANK = { stat: 3, asap: 2, urgent: 1, routine: 0 };
const CLOCKS = { fds: "28-day", dtt: "31-day", rtt: "62-day" };
const URGENT = new Set(["urgent", "asap", "stat"]);
const TITLE = document.title;
const alerts = new Map();
let live = null;

const session = new Session({
  page: "/console/",
  notRenewed: "Your sign-in could not be renewed, so new alerts are not arriving. Sign in again to carry on.",
  onEnded: (message) => {
    if (live) live.stop();
    $("live").textContent = "Not connected";
    const banner = $("session-ended");
    banner.replaceChildren(document.createTextNode(message + " "));
    const link = document.createElement("a");
    link.href = session.signInUrl;
    link.textContent = "Sign in again";
    banner.appendChild(link);
    banner.hidden = false;
  },
});

function text(tag, value, cls) { const el = document.createElement(tag); el.textContent = value; if (cls) el.className = cls; return el; }
function ext(alert, url) { return (alert.extension || []).filter((e) => e.url.endsWith(url)); }
function patientOf(alert) { return alert.subject ? alert.subject.identifier.value : "—"; }
function labelled(td, label) { td.dataset.label = label; return td; }
const when = (iso) => new Date(iso).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });

function acknowledgement(alert) {
  const note = (alert.note || []).find((n) => n.text === "Acknowledged");
  return note ? `Acknowledged by ${note.authorString || "someone"}, ${when(note.time)}` : null;
}

function row(alert) {
  const tr = document.createElement("tr");
  tr.id = "alert-" + alert.id;
  tr.className = "p-" + alert.priority;
  tr.dataset.status = alert.status;
  tr.appendChild(labelled(text("td", alert.priority), "Priority"));
  tr.appendChild(labelled(text("td", patientOf(alert)), "Patient"));
  const what = labelled(document.createElement("td"), "What");
  const ref = (alert.payload || []).find((p) => p.contentReference);
  if (ref) {
    const a = text("a", alert.payload[0].contentString);
    a.href = "/fhir/" + ref.contentReference.reference;  // kept for copy-link; a click opens it in place
    a.addEventListener("click", (event) => {
      event.preventDefault();
      openDocument(session, ref.contentReference.reference, alert.payload[0].contentString);
    });
    what.appendChild(a);
  } else {
    what.textContent = alert.payload[0].contentString;
  }
  tr.appendChild(what);
  const clocks = labelled(document.createElement("td"), "Pathway clocks");
  for (const clock of ext(alert, "cwt-clock")) {
    const get = (name) => clock.extension.find((e) => e.url === name);
    const badge = clockBadge(get("day").valueInteger, get("target").valueInteger, get("risk").valueCode, null);
    const name = CLOCKS[get("clock").valueCode] || get("clock").valueCode;
    badge.textContent = `${name} ${badge.textContent.charAt(0).toLowerCase()}${badge.textContent.slice(1)}`;
    clocks.appendChild(badge);
  }
  const pathway = ((alert.partOf || [])[0] || {}).reference;
  if (pathway && pathway.startsWith("EpisodeOfCare/")) {
    const open = text("button", "Pathway");
    open.type = "button";
    open.setAttribute("aria-label", "Pathway details and events for patient " + patientOf(alert));
    open.addEventListener("click", () => showPathway(pathway.slice("EpisodeOfCare/".length)));
    clocks.appendChild(open);
  }
  tr.appendChild(clocks);
  tr.appendChild(labelled(text("td", when(alert.sent)), "Sent"));
  const state = ext(alert, "alert-state")[0];
  tr.appendChild(labelled(text("td", acknowledgement(alert) || (state ? state.valueCode : alert.status), "state"), "State"));
  const action = document.createElement("td");
  if (alert.status === "in-progress") {
    const button = text("button", "Acknowledge");
    button.setAttribute("aria-label", "Acknowledge alert for patient " + patientOf(alert));
    button.addEventListener("click", () => acknowledge(alert.id, button));
    action.appendChild(button);
  } else {
    action.textContent = "✓";
  }
  tr.appendChild(action);
  return tr;
}

function matches(alert) {
  const status = $("f-status").value, priority = $("f-priority").value, patient = $("f-patient").value.replace(/\s/g, "");
  return (!status || alert.status === status) && (!priority || alert.priority === priority) &&
    (!patient || patientOf(alert) === patient);
}

function render(fresh) {
  const body = $("alerts");
  body.replaceChildren();
  const shown = [...alerts.values()].filter(matches)
    .sort((a, b) => (RANK[b.priority] - RANK[a.priority]) || b.sent.localeCompare(a.sent));
  for (const alert of shown) {
    const tr = row(alert);
    if (fresh && fresh === alert.id) tr.classList.add("new");
    body.appendChild(tr);
  }
  $("empty").hidden = shown.length > 0;
  const open = [...alerts.values()].filter((a) => a.status === "in-progress").length;
  document.title = open ? `(${open}) ${TITLE}` : TITLE;
}

function announce(alert) {
  if (!URGENT.has(alert.priority)) return;
  const message = `New ${alert.priority} alert for patient ${patientOf(alert)}: ${alert.payload[0].contentString}`;
  // Cleared first, so the same words twice are still announced.
  $("announce").textContent = "";
  setTimeout(() => { $("announce").textContent = message; }, 50);
  if (window.Notification && Notification.permission === "granted" && document.hidden) {
    new Notification("Urgent MDT alert", { body: alert.payload[0].contentString, tag: alert.id });
  }
}

// Whose alerts: the MDT's, or for a trust's bed managers the repatriations into their trust (issue 18).
function audience() {
  return session.claims.role === "bed-manager" ? `Organization/${session.claims.org}` : `CareTeam/${session.claims.mdt}`;
}

async function loadAlerts() {
  alerts.clear();
  const response = await session.fetch(`/fhir/Communication?recipient=${encodeURIComponent(audience())}&_count=200`,
    { headers: { Accept: "application/fhir+json" } });
  if (!response.ok) throw new Error("alerts " + response.status);
  const bundle = await response.json();
  for (const entry of bundle.entry || []) alerts.set(entry.resource.id, entry.resource);
  render();
}

async function acknowledge(id, button) {
  button.disabled = true;
  try {
    const response = await session.fetch(`/fhir/Communication/${id}/$acknowledge`, { method: "POST", headers: { Accept: "application/fhir+json" } });
    if (!response.ok) throw new Error("acknowledge " + response.status);
    alerts.set(id, await response.json());
    render();
  } catch (err) { button.disabled = false; }
}

function showSignIn(message) {
  $("board").hidden = true; $("tracking").hidden = true; $("tabs").hidden = true;
  $("signin").hidden = false;
  $("signin-message").textContent = message || "";
  $("signin-link").href = session.signInUrl;
  $("live").textContent = "Not connected";
}

// A pathway's details; a recorded or corrected event refreshes the tracking list behind the dialog.
function showPathway(id) {
  openPathway(session, id, () => loadTracking(session, session.claims.mdt, showPathway).catch(() => {}));
}

function selectTab(name) {
  for (const [tab, panel] of [["tab-alerts", "board"], ["tab-tracking", "tracking"]]) {
    const on = panel === name;
    $(tab).setAttribute("aria-selected", String(on));
    $(panel).hidden = !on;
  }
  if (name === "tracking") loadTracking(session, session.claims.mdt, showPathway).catch(() => { $("ptl-empty").textContent = "The tracking list could not be loaded."; $("ptl-empty").hidden = false; });
}

async function start() {
  const begun = await session.begin();
  if (!begun.ok) { showSignIn(begun.message); return; }
  const beds = session.claims.role === "bed-manager";
  if (!session.claims.mdt && !beds) { showSignIn("You are signed in, but not as a member of an MDT."); return; }
  $("signin").hidden = true; $("tabs").hidden = false;
  $("tab-tracking").hidden = beds;  // cancer pathways are the MDT's
  selectTab("board");
  $("who").textContent = `${session.name} · ${session.claims.org} · ${audience()}`;
  $("signout").hidden = false;
  if (window.Notification && Notification.permission === "default") $("notify").hidden = false;
  live = new Live({
    session, team: audience(), onLoad: loadAlerts,
    onAlert: (data) => {
      alerts.set(data.alert.id, data.alert);
      render(data.kind === "raised" ? data.alert.id : null);
      if (data.kind === "raised") announce(data.alert);
    },
    onStatus: (status, offline) => {
      $("live").textContent = status;
      $("offline").textContent = offline || "";
      $("offline").hidden = !offline;
    },
  });
  await live.connect();
}

for (const id of ["f-status", "f-priority", "f-patient"]) $(id).addEventListener("input", () => render());
$("tab-alerts").addEventListener("click", () => selectTab("board"));
$("tab-tracking").addEventListener("click", () => selectTab("tracking"));
$("ptl-refresh").addEventListener("click", () => selectTab("tracking"));
$("ptl-csv").addEventListener("click", () => downloadCsv(session, session.claims.mdt).catch(() => {}));
$("signout").addEventListener("click", () => session.signOut());
$("notify").addEventListener("click", async () => { await Notification.requestPermission(); $("notify").hidden = true; });
initViewer();
initPathway();
start();
