// The patient tracking list: the MDT's open pathways, one row per patient with its 28-, 31- and 62-day
// clocks and a button to its details (pathway.js), the 62-day buckets from the $tracking-list operation's
// Parameters, and the CSV export (fetched with the token, so it cannot be a plain link).
"use strict";

const $ = (id) => document.getElementById(id);
const CLOCKS = [["fds", "28-day"], ["dtt", "31-day"], ["rtt", "62-day"]];
const STATES = { "on-track": "On track", "at-risk": "At risk", breached: "Breached", met: "Met" };
const BUCKETS = { "0-28": "0–28 days", "29-62": "29–62 days", "63-104": "63–104 days", "over-104": "Over 104 days" };

function text(tag, value, cls) { const el = document.createElement(tag); el.textContent = value; if (cls) el.className = cls; return el; }

function part(clock, name) {
  const found = clock.extension.find((e) => e.url === name);
  return found ? (found.valueCode ?? found.valueInteger ?? found.valueDate) : undefined;
}

export function clockBadge(day, target, risk, stop) {
  // A running clock past its target is breached whatever the rules engine last said.
  const state = !stop && day > target ? "breached" : risk;
  const label = state === "breached" ? `Breached: day ${day} of ${target}`
    : stop ? `${STATES[state] || state}: stopped on day ${day} of ${target}`
    : `${STATES[state] || state}: day ${day} of ${target}`;
  const badge = text("span", label, "clock " + state);
  badge.dataset.state = state;
  return badge;
}

function clocksOf(pathway) {
  const found = {};
  for (const ext of pathway.extension || []) {
    if (!ext.url.endsWith("cwt-clock")) continue;
    found[part(ext, "clock")] = { day: part(ext, "day"), target: part(ext, "target"), risk: part(ext, "risk"), stop: part(ext, "stop") };
  }
  return found;
}

function labelled(td, label) { td.dataset.label = label; return td; }

function pathwayRow(pathway, onDetails) {
  const tr = document.createElement("tr");
  tr.id = "ptl-" + pathway.id;
  const clocks = clocksOf(pathway);
  tr.appendChild(labelled(text("td", pathway.patient.identifier.value), "Patient"));
  tr.appendChild(labelled(text("td", ((pathway.type || [])[0] || { coding: [{}] }).coding[0].code || "—"), "Tumour site"));
  const route = (pathway.extension || []).find((e) => e.url.endsWith("referral-route"));
  tr.appendChild(labelled(text("td", route ? route.valueCode : "—"), "Route"));
  const states = [];
  for (const [code, label] of CLOCKS) {
    const td = labelled(document.createElement("td"), label);
    const clock = clocks[code];
    if (clock) {
      const badge = clockBadge(clock.day, clock.target, clock.risk, clock.stop);
      states.push(badge.dataset.state);
      td.appendChild(badge);
    } else {
      td.textContent = code === "dtt" ? "No decision to treat yet" : "—";
    }
    tr.appendChild(td);
  }
  const worst = ["breached", "at-risk", "on-track", "met"].find((s) => states.includes(s)) || "on-track";
  tr.dataset.state = worst;
  if (worst === "breached") tr.classList.add("row-breached");
  const state = labelled(document.createElement("td"), "State");
  state.appendChild(worst === "breached" ? text("strong", "BREACHED", "breached-flag") : text("span", STATES[worst]));
  tr.appendChild(state);
  const action = document.createElement("td");
  const details = text("button", "Details and events");
  details.type = "button";
  details.setAttribute("aria-label", "Pathway details and events for patient " + pathway.patient.identifier.value);
  details.addEventListener("click", () => onDetails(pathway.id));
  action.appendChild(details);
  tr.appendChild(action);
  return tr;
}

// Each ``name`` parameter of a Parameters resource as {part name: value}.
function parts(parameters, name) {
  return (parameters.parameter || []).filter((p) => p.name === name).map((p) => Object.fromEntries(
    (p.part || []).map((part) => [part.name, Object.entries(part).find(([k]) => k.startsWith("value"))[1]])));
}

export async function loadTracking(session, team, onDetails) {
  const query = `team=CareTeam/${encodeURIComponent(team)}`;
  const [pathways, ptl] = await Promise.all([
    session.fetch(`/fhir/EpisodeOfCare?${query}&_count=500`, { headers: { Accept: "application/fhir+json" } }),
    session.fetch(`/fhir/EpisodeOfCare/$tracking-list?${query}`, { headers: { Accept: "application/fhir+json" } }),
  ]);
  if (!pathways.ok || !ptl.ok) throw new Error("tracking list " + pathways.status + "/" + ptl.status);
  const bundle = await pathways.json(), report = await ptl.json();
  const buckets = $("ptl-buckets").tBodies[0];
  buckets.replaceChildren();
  for (const bucket of parts(report, "bucket")) {
    const tr = document.createElement("tr");
    tr.dataset.bucket = bucket.days;
    tr.appendChild(text("th", BUCKETS[bucket.days] || bucket.days));
    tr.firstChild.scope = "row";
    tr.appendChild(text("td", String(bucket.withDecisionToTreat)));
    tr.appendChild(text("td", String(bucket.withoutDecisionToTreat)));
    buckets.appendChild(tr);
  }
  const rows = $("ptl-rows");
  rows.replaceChildren();
  const open = (bundle.entry || []).map((e) => e.resource).filter((p) => p.status !== "finished");
  const order = { breached: 0, "at-risk": 1, "on-track": 2, met: 3 };
  const built = open.map((p) => pathwayRow(p, onDetails)).sort((a, b) => order[a.dataset.state] - order[b.dataset.state]);
  for (const tr of built) rows.appendChild(tr);
  $("ptl-empty").hidden = built.length > 0;
}

export async function downloadCsv(session, team) {
  const response = await session.fetch(`/fhir/EpisodeOfCare/$tracking-list?team=CareTeam/${encodeURIComponent(team)}&_format=csv`,
    { headers: { Accept: "text/csv" } });
  if (!response.ok) throw new Error("csv " + response.status);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = `ptl-${team}-${new Date().toISOString().slice(0, 10)}.csv`;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
