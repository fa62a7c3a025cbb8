const TOKEN_KEY = "lhcie-token";
function takeToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  return sessionStorage.getItem(TOKEN_KEY);
}
function hashParam(name) {
  const m = new RegExp("(?:^|[#&])" + name + "=([^&]+)").exec(location.hash);
  return m ? decodeURIComponent(m[1]) : null;
}
function claims(token) {
  try { return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))); }
  catch (e) { return null; }
}
function $(id) { return document.getElementById(id); }
function el(tag, text, attrs) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}
function say(message) { $("status").textContent = message || ""; }
async function api(path) {
  const response = await fetch(path, {headers: {"Authorization": "Bearer " + sessionStorage.getItem(TOKEN_KEY),
                                                "Accept": "application/fhir+json"}});
  const body = await response.json();
  if (!response.ok) {
    const issue = (body.issue || [])[0] || {};
    throw new Error(issue.diagnostics || ("HTTP " + response.status));
  }
  return body;
}
