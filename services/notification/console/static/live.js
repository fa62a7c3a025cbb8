// The live alert stream, kept open all day. EventSource cannot send headers, so each connection needs a
// short-lived signed stream token first; fetching it may fail while the exchange restarts, so every
// failure (token fetch, first load, stream error) is retried with capped exponential backoff until it
// succeeds, and the stream resumes after the last event number seen (the server replays what was missed).
"use strict";

const FIRST_DELAY = 1000, MAX_DELAY = 30000;

export function backoff(attempt) {
  const ceiling = Math.min(MAX_DELAY, FIRST_DELAY * 2 ** attempt);
  return ceiling / 2 + Math.random() * ceiling / 2;  // jitter: a ward of consoles does not retry in step
}

export function duration(ms) {
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export class Live {
  constructor({ session, team, onLoad, onAlert, onStatus }) {
    Object.assign(this, { session, team, onLoad, onAlert, onStatus });
    this.lastEventId = null;
    this.source = null;
    this.attempt = 0;
    this.offlineSince = null;
    this.nextTry = null;
    this.stopped = false;
    this._ticker = setInterval(() => this._tick(), 1000);
  }

  async connect() {
    if (this.stopped) return;
    let grant;
    try {
      const response = await this.session.fetch(`/alerts/stream-token?team=${encodeURIComponent(this.team)}`,
        { method: "POST" });
      if (!response.ok) throw new Error("stream-token " + response.status);
      grant = await response.json();
      if (this.lastEventId === null) {
        await this.onLoad();
        this.lastEventId = grant.lastEventId;
      }
    } catch (err) {
      this._retry();
      return;
    }
    if (this.source) this.source.close();
    const source = new EventSource(`/alerts/stream?token=${encodeURIComponent(grant.token)}&lastEventId=${this.lastEventId}`);
    this.source = source;
    source.addEventListener("open", () => {
      this.attempt = 0;
      this.offlineSince = null;
      this.nextTry = null;
      this.onStatus("Live", null);
    });
    source.addEventListener("alert", (event) => {
      this.lastEventId = event.lastEventId;
      this.onAlert(JSON.parse(event.data));
    });
    // The stream token's time is up (the server then closes the stream): carry on with a fresh one at once.
    source.addEventListener("expired", () => { source.close(); this.connect(); });
    source.addEventListener("error", () => {
      // EventSource would retry with the same (perhaps expired) token: take over with a fresh one.
      source.close();
      if (this.source === source) this._retry();
    });
  }

  _retry() {
    if (this.stopped) return;
    if (this.offlineSince === null) this.offlineSince = Date.now();
    const delay = backoff(this.attempt);
    this.attempt += 1;
    this.nextTry = Date.now() + delay;
    this._tick();
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.connect(), delay);
  }

  _tick() {
    if (this.offlineSince === null) return;
    const now = Date.now();
    const next = this.nextTry && this.nextTry > now ? `; next try in ${duration(this.nextTry - now + 999)}` : "";
    this.onStatus("Reconnecting…", `Offline for ${duration(now - this.offlineSince)}${next}`);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this._timer);
    clearInterval(this._ticker);
    if (this.source) this.source.close();
  }
}
