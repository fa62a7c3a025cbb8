// One pathway in a dialog: its clocks, the events recorded on it (with any corrected dates), a form to
// record the next event, and "Correct date" on each recorded event. The exchange replays the clocks on a
// correction, so the page only shows what it answers.
"use strict";
import { clockBadge } from "./tracking.js";

const $ = (id) => document.getElementById(id);
// The rules' recorded events (services/notification/rules/default.yaml), in plain words.
export const EVENTS = {
  "diagnosis-communicated": "Diagnosis communicated to the patient (stops the 28-day clock)",
  "cancer-ruled-out": "Cancer ruled out and the patient told (stops the 28- and 62-day clocks, ends the pathway)",
  "decision-to-treat": "Decision to treat (starts the 31-day clock)",
  "first-definitive-treatment": "First definitive treatment (stops the 31- and 62-day clocks, ends the pathway)",
  "consultant-upgrade": "Consultant upgrade (starts the 62-day clock)",
  "clock-pause": "Clock paused (patient-initiated delay)",
  "clock-resume": "Clock resumed",
};
const CLOCKS = { fds: "28-day", dtt: "31-day", rtt: "62-day" };
let current = null, session = null, changed = () => {};

function text(tag, value, cls) { const el = document.createElement(tag); el.textContent = value; if (cls) el.className = cls; return el; }
function values(ext) {
  const out = {};
  for (const part of ext.extension || []) {
    const value = Object.entries(part).find(([k]) => k.startsWith("value"))[1];
    if (part.url === "correctedFrom") (out.correctedFrom = out.correctedFrom || []).push(value);
    else out[part.url] = value;
  }
  return out;
}
const day = (iso) => new Date(iso + "T12:00:00").toLocaleDateString("en-GB", { dateStyle: "medium" });
const today = () => new Date().toLocaleDateString("en-CA");  // YYYY-MM-DD in the browser's time zone

function render(pathway) {
  current = pathway;
  const route = (pathway.extension || []).find((e) => e.url.endsWith("referral-route"));
  const site = ((pathway.type || [])[0] || { coding: [{}] }).coding[0].code;
  $("pathway-title").textContent = `Pathway for patient ${pathway.patient.identifier.value}`;
  $("pathway-meta").textContent = [`${site} · ${route ? route.valueCode : "—"}`, `opened ${day(pathway.period.start)}`,
    (pathway.team[0] || {}).reference, pathway.status === "finished" ? "finished" : "active"].join(" · ");
  const clocks = $("pathway-clocks");
  clocks.replaceChildren();
  for (const ext of (pathway.extension || []).filter((e) => e.url.endsWith("cwt-clock"))) {
    const c = values(ext);
    const li = document.createElement("li");
    li.dataset.clock = c.clock;
    li.appendChild(text("strong", `${CLOCKS[c.clock] || c.clock}: `));
    li.appendChild(clockBadge(c.day, c.target, c.risk, c.stop));
    li.appendChild(text("span", ` started ${day(c.start)}` + (c.stop ? `, stopped ${day(c.stop)}` : "")));
    clocks.appendChild(li);
  }
  const events = $("pathway-events");
  events.replaceChildren();
  const recorded = (pathway.extension || []).filter((e) => e.url.endsWith("cwt-event")).map(values);
  for (const e of recorded) {
    const tr = document.createElement("tr");
    tr.dataset.event = e.event;
    tr.dataset.id = e.id;
    tr.appendChild(text("td", EVENTS[e.event] ? EVENTS[e.event].replace(/ \(.*\)$/, "") : e.event));
    const when = text("td", day(e.date));
    if (e.correctedFrom) when.appendChild(text("span", ` (corrected from ${e.correctedFrom.map(day).join(", then ")})`, "corrected"));
    tr.appendChild(when);
    tr.appendChild(text("td", e.recordedBy));
    const action = document.createElement("td");
    const button = text("button", "Correct date");
    button.type = "button";
    button.setAttribute("aria-label", `Correct the date of ${e.event} recorded for ${day(e.date)}`);
    button.addEventListener("click", () => startCorrection(e));
    action.appendChild(button);
    tr.appendChild(action);
    events.appendChild(tr);
  }
  $("pathway-no-events").hidden = recorded.length > 0;
  resetForm();
  $("pathway-form").hidden = false;
}

function resetForm() {
  $("pe-event").disabled = false;
  $("pe-corrects").value = "";
  $("pe-date").value = today();
  $("pe-reason").value = "";
  $("pe-legend").textContent = current && current.status === "finished" ? "The pathway is finished: correct a recorded date above"
    : "Record an event";
  $("pe-submit").textContent = "Record";
  $("pe-cancel").hidden = true;
  $("pe-submit").disabled = !!current && current.status === "finished";
}

function startCorrection(event) {
  $("pe-event").value = event.event;
  $("pe-event").disabled = true;
  $("pe-corrects").value = event.id;
  $("pe-date").value = event.date;
  $("pe-legend").textContent = `Correct the date of: ${EVENTS[event.event] || event.event}`;
  $("pe-submit").textContent = "Save the corrected date";
  $("pe-submit").disabled = false;
  $("pe-cancel").hidden = false;
  $("pe-date").focus();
}

async function submit(form) {
  const status = $("pathway-status");
  const parameter = [{ name: "event", valueCode: $("pe-event").value }, { name: "date", valueDate: $("pe-date").value }];
  if ($("pe-corrects").value) parameter.push({ name: "corrects", valueString: $("pe-corrects").value });
  if ($("pe-reason").value.trim()) parameter.push({ name: "reason", valueString: $("pe-reason").value.trim() });
  $("pe-submit").disabled = true;
  status.textContent = "Saving…";
  try {
    const response = await session.fetch(`/fhir/EpisodeOfCare/${current.id}/$record-event`, {
      method: "POST", headers: { "Content-Type": "application/fhir+json", Accept: "application/fhir+json" },
      body: JSON.stringify({ resourceType: "Parameters", parameter }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const issue = (body.issue || [])[0] || {};
      status.textContent = `Not saved: ${issue.diagnostics || response.status}`;
      $("pe-submit").disabled = false;
      return;
    }
    const word = parameter.some((p) => p.name === "corrects") ? "Corrected" : "Recorded";
    render(body);
    status.textContent = `${word}: ${EVENTS[parameter[0].valueCode].replace(/ \(.*\)$/, "")}, ${day(parameter[1].valueDate)}.`;
    changed(body);
  } catch (err) {
    status.textContent = "Not saved: the exchange is unreachable. Try again.";
    $("pe-submit").disabled = false;
  }
}

export async function openPathway(given, id, onChange) {
  session = given;
  changed = onChange || (() => {});
  const dialog = $("pathway");
  $("pathway-status").textContent = "";
  $("pathway-title").textContent = "Pathway";
  $("pathway-meta").textContent = "Loading…";
  $("pathway-form").hidden = true;
  $("pathway-clocks").replaceChildren();
  $("pathway-events").replaceChildren();
  if (!dialog.open) dialog.showModal();
  const response = await session.fetch(`/fhir/EpisodeOfCare/${encodeURIComponent(id)}`,
    { headers: { Accept: "application/fhir+json" } }).catch(() => null);
  if (!response || !response.ok) {
    $("pathway-meta").textContent = "The pathway could not be opened" + (response ? ` (${response.status}).` : ".");
    return;
  }
  render(await response.json());
}

export function initPathway() {
  const select = $("pe-event");
  for (const [code, label] of Object.entries(EVENTS)) {
    const option = text("option", label);
    option.value = code;
    select.appendChild(option);
  }
  $("pathway-form").addEventListener("submit", (event) => { event.preventDefault(); submit(event.target); });
  $("pe-cancel").addEventListener("click", () => resetForm());
  $("pathway-close").addEventListener("click", () => $("pathway").close());
}
