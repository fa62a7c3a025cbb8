// Who is signed in and their exchange token. People sign in through /signin (OpenID Connect); the page
// then asks /signin/session for a short-lived token and asks again before it expires, so the page can
// stay open all day. A token given in #token=... (lhcie token --console, scripts) is used as it is until
// it expires. The provider's own tokens never reach the page. One file for every page that signs people
// in (the coordinator console, the DCC, the patient page): shared/web serves it under each page's own
// static path, so a page imports it as "./session.js".
"use strict";

export function decode(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(atob(part + "===".slice((part.length + 3) % 4)));
}

export class Session {
  constructor({ page, notRenewed, onEnded, onRenewed }) {
    this.page = page;            // the path a sign-in returns to, e.g. "/console/"
    // What the page says when the sign-in session cannot be renewed: what stops working on this page.
    this.notRenewed = notRenewed;
    this.onEnded = onEnded;      // (message) => void: the page must say it plainly
    this.onRenewed = onRenewed || (() => {});
    this.bearer = null;
    this.claims = null;
    this.name = null;
    this.renewals = 0;
    this.managed = false;        // true when the sign-in session renews the token
    this._timer = null;
  }

  get signInUrl() { return "/signin?next=" + encodeURIComponent(this.page); }

  // Returns {ok: true} when signed in, or {ok: false, message} when the page should offer sign-in.
  async begin() {
    const error = location.hash.match(/signin-error=([^&]+)/);
    if (error) {
      history.replaceState(null, "", location.pathname);
      return { ok: false, message: "Sign-in did not complete: " + decodeURIComponent(error[1]) };
    }
    const given = location.hash.match(/token=([^&]+)/);
    if (given) {
      sessionStorage.setItem("lhcie.token", decodeURIComponent(given[1]));
      history.replaceState(null, "", location.pathname);  // keep the token out of the address bar
    }
    const stored = sessionStorage.getItem("lhcie.token");
    if (stored) return this._useGiven(stored);
    const response = await this._fetchSession();
    if (response === null) return { ok: false, message: "" };
    this._apply(response);
    return { ok: true };
  }

  _useGiven(token) {
    try { this.claims = decode(token); } catch (err) {
      sessionStorage.removeItem("lhcie.token");
      return { ok: false, message: "That is not a valid token." };
    }
    this.bearer = token;
    this.name = this.claims.name || this.claims.sub;
    const left = this.claims.exp * 1000 - Date.now();
    if (left <= 0) { sessionStorage.removeItem("lhcie.token"); return { ok: false, message: "That token has expired." }; }
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._end("Your access token has expired. Sign in again to carry on."), left);
    return { ok: true };
  }

  async _fetchSession() {
    let response;
    try {
      response = await fetch("/signin/session", { method: "POST", credentials: "same-origin" });
    } catch (err) {
      return undefined;  // the exchange is unreachable: not the same as "not signed in"
    }
    if (response.status === 401) return null;
    if (!response.ok) return undefined;
    return response.json();
  }

  _apply(body) {
    this.managed = true;
    this.bearer = body.access_token;
    this.claims = decode(body.access_token);
    this.name = body.name || this.claims.name || this.claims.sub;
    const ttl = body.expires_in;
    // Renew well before expiry, and retry sooner when a renewal could not reach the exchange.
    const delay = Math.max(5, Math.min(ttl - 60, ttl * 0.75)) * 1000;
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this.renew(), delay);
  }

  // Asks for a fresh token. A 401 ends the session (the page says so); an unreachable exchange is retried.
  async renew() {
    if (!this.managed) { this._end("Your access token is no longer accepted. Sign in again to carry on."); return false; }
    const body = await this._fetchSession();
    if (body === null) {
      this._end(this.notRenewed);
      return false;
    }
    if (body === undefined) {
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this.renew(), 5000);
      return false;
    }
    this._apply(body);
    this.renewals += 1;
    document.body.dataset.renewals = String(this.renewals);
    this.onRenewed();
    return true;
  }

  _end(message) {
    clearTimeout(this._timer);
    sessionStorage.removeItem("lhcie.token");
    this.bearer = null;
    this.onEnded(message);
  }

  async signOut() {
    sessionStorage.removeItem("lhcie.token");
    try { await fetch("/signin/signout", { method: "POST", credentials: "same-origin" }); } catch (err) { /* offline */ }
    location.assign(this.page);
  }

  // fetch with the bearer token; one renewal and retry on a 401 (the token may have just expired).
  async fetch(path, options = {}) {
    const go = () => fetch(path, { ...options, headers: { ...(options.headers || {}), Authorization: "Bearer " + this.bearer } });
    let response = await go();
    if (response.status !== 401) return response;
    if (!this.managed) { this._end("Your access token is no longer accepted. Sign in again to carry on."); return response; }
    if (await this.renew()) response = await go();
    return response;
  }
}
