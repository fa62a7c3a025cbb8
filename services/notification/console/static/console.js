// The coordinator console: the MDT's alerts by urgency, live over SSE, acknowledged with one click.
// The bearer token comes from #token=... (then kept in sessionStorage) or the sign-in form; the stream is
// authorised by a short-lived signed query token because EventSource cannot send headers.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const RANK = { stat: 3, asap: 2, urgent: 1, routine: 0 };
  const CLOCKS = { fds: "28-day", dtt: "31-day", rtt: "62-day" };
  const alerts = new Map();
  let bearer = null, claims = null, source = null, lastEventId = null;

  function takeToken() {
    const match = location.hash.match(/token=([^&]+)/);
    if (match) {
      sessionStorage.setItem("lhcie.token", decodeURIComponent(match[1]));
      history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
    }
    return sessionStorage.getItem("lhcie.token");
  }

  function decode(token) {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
  }

  async function api(path, options) {
    const response = await fetch(path, { ...options, headers: { Authorization: "Bearer " + bearer, Accept: "application/fhir+json" } });
    if (response.status === 401) { sessionStorage.removeItem("lhcie.token"); showSignIn("Your session has expired."); throw new Error("401"); }
    if (!response.ok) throw new Error(path + " " + response.status);
    return response.json();
  }

  function showSignIn(message) {
    $("board").hidden = true; $("signin").hidden = false;
    $("live").textContent = message || "Not connected";
    $("token").focus();
  }

  function text(tag, value, cls) { const el = document.createElement(tag); el.textContent = value; if (cls) el.className = cls; return el; }

  function ext(alert, url) { return (alert.extension || []).filter((e) => e.url.endsWith(url)); }

  function patientOf(alert) { return alert.subject ? alert.subject.identifier.value : "—"; }

  function row(alert) {
    const tr = document.createElement("tr");
    tr.id = "alert-" + alert.id;
    tr.className = "p-" + alert.priority;
    tr.dataset.status = alert.status;
    tr.appendChild(text("td", alert.priority));
    tr.appendChild(text("td", patientOf(alert)));
    const what = document.createElement("td");
    const ref = (alert.payload || []).find((p) => p.contentReference);
    if (ref) {
      const a = text("a", alert.payload[0].contentString);
      a.href = "/fhir/" + ref.contentReference.reference;
      what.appendChild(a);
    } else {
      what.textContent = alert.payload[0].contentString;
    }
    tr.appendChild(what);
    const clocks = document.createElement("td");
    for (const clock of ext(alert, "cwt-clock")) {
      const get = (name) => clock.extension.find((e) => e.url === name);
      const risk = get("risk").valueCode;
      clocks.appendChild(text("span", `${CLOCKS[get("clock").valueCode] || get("clock").valueCode}: day ${get("day").valueInteger} of ${get("target").valueInteger}`, "clock " + risk));
    }
    tr.appendChild(clocks);
    tr.appendChild(text("td", new Date(alert.sent).toLocaleString("en-GB")));
    const state = ext(alert, "alert-state")[0];
    tr.appendChild(text("td", state ? state.valueCode : alert.status));
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
    const status = $("f-status").value, priority = $("f-priority").value, patient = $("f-patient").value.trim();
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
  }

  async function load() {
    alerts.clear();
    let url = `/fhir/Communication?recipient=CareTeam/${encodeURIComponent(claims.mdt)}&_count=200`;
    const bundle = await api(url);
    for (const entry of bundle.entry || []) alerts.set(entry.resource.id, entry.resource);
    render();
  }

  async function acknowledge(id, button) {
    button.disabled = true;
    try {
      const updated = await api(`/fhir/Communication/${id}/$acknowledge`, { method: "POST" });
      alerts.set(id, updated);
      render();
    } catch (err) { button.disabled = false; }
  }

  async function connect() {
    const grant = await fetch(`/alerts/stream-token?team=CareTeam/${encodeURIComponent(claims.mdt)}`,
      { method: "POST", headers: { Authorization: "Bearer " + bearer } }).then((r) => r.json());
    if (lastEventId === null) { lastEventId = grant.lastEventId; await load(); }
    if (source) source.close();
    // Resume after the last event seen: the server replays anything missed while disconnected.
    source = new EventSource(`/alerts/stream?token=${encodeURIComponent(grant.token)}&lastEventId=${lastEventId}`);
    source.addEventListener("open", () => { $("live").textContent = "Live"; });
    source.addEventListener("alert", (event) => {
      lastEventId = event.lastEventId;
      const data = JSON.parse(event.data);
      alerts.set(data.alert.id, data.alert);
      render(data.kind === "raised" ? data.alert.id : null);
    });
    // The stream token's time is up (the server then closes the stream): carry on with a fresh one at once.
    source.addEventListener("expired", () => { source.close(); connect().catch(() => {}); });
    source.addEventListener("error", () => {
      $("live").textContent = "Reconnecting…";
      // A new signed token each time: the old one may have expired.
      source.close();
      setTimeout(() => connect().catch(() => {}), 2000);
    });
  }

  async function start(token) {
    bearer = token;
    try { claims = decode(token); } catch (err) { showSignIn("That is not a valid token."); return; }
    if (!claims.mdt) { showSignIn("This token is not for an MDT member."); return; }
    $("signin").hidden = true; $("board").hidden = false;
    $("who").textContent = `${claims.sub} · CareTeam/${claims.mdt}`;
    await connect();
  }

  for (const id of ["f-status", "f-priority", "f-patient"]) $(id).addEventListener("input", () => render());
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("lhcie.token", $("token").value.trim());
    start($("token").value.trim());
  });
  const token = takeToken();
  if (token) start(token); else showSignIn();
})();
