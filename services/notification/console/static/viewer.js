// Opens a document inside the console: the metadata and the content are fetched with the signed-in
// person's token (a plain link would carry no token and answer 401), and shown in a dialog.
"use strict";

const $ = (id) => document.getElementById(id);
const SHOWN_INLINE = /^(application\/pdf|image\/(png|jpeg|gif)|text\/plain)/;
let objectUrl = null;

function reset() {
  if (objectUrl) URL.revokeObjectURL(objectUrl);
  objectUrl = null;
  for (const id of ["viewer-frame", "viewer-text", "viewer-download", "viewer-error"]) $(id).hidden = true;
  $("viewer-frame").removeAttribute("src");
  $("viewer-text").textContent = "";
  $("viewer-meta").textContent = "Loading…";
}

function fail(message) {
  $("viewer-meta").textContent = "";
  $("viewer-error").textContent = message;
  $("viewer-error").hidden = false;
}

export async function openDocument(session, reference, label) {
  const dialog = $("viewer");
  reset();
  $("viewer-title").textContent = label || "Document";
  if (!dialog.open) dialog.showModal();
  const meta = await session.fetch("/fhir/" + reference, { headers: { Accept: "application/fhir+json" } }).catch(() => null);
  if (!meta || !meta.ok) {
    fail(meta && meta.status === 404 ? "This document is not (or no longer) shared with your organisation."
      : "The document could not be opened" + (meta ? ` (${meta.status}).` : ": the exchange is unreachable."));
    return;
  }
  const doc = await meta.json();
  const attachment = ((doc.content || [])[0] || {}).attachment || {};
  const type = ((doc.type || {}).coding || [])[0] || {};
  const author = (doc.custodian && doc.custodian.identifier && doc.custodian.identifier.value) || "";
  $("viewer-title").textContent = type.display || label || "Document";
  $("viewer-meta").textContent = [author && `From ${author}`, doc.date && new Date(doc.date).toLocaleString("en-GB"),
    attachment.contentType].filter(Boolean).join(" · ");
  if (!attachment.url) { fail("The document has no content yet (it may still be being checked)."); return; }
  const content = await session.fetch(attachment.url).catch(() => null);
  if (!content || !content.ok) {
    fail("The document's content could not be fetched" + (content ? ` (${content.status}).` : "."));
    return;
  }
  const blob = await content.blob();
  objectUrl = URL.createObjectURL(blob);
  const media = attachment.contentType || blob.type;
  if (media.startsWith("text/plain")) {
    $("viewer-text").textContent = await blob.text();
    $("viewer-text").hidden = false;
  } else if (SHOWN_INLINE.test(media)) {
    $("viewer-frame").src = objectUrl;
    $("viewer-frame").hidden = false;
  }
  const download = $("viewer-download");
  download.href = objectUrl;
  download.download = attachment.title || (doc.id + (media === "application/pdf" ? ".pdf" : ""));
  download.textContent = SHOWN_INLINE.test(media) ? "Download" : `Download (${media} cannot be shown here)`;
  download.hidden = false;
}

export function initViewer() {
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer").addEventListener("close", reset);
}
