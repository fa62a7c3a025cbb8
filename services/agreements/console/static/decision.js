// Confirming a decision that stops sharing (reject, revoke, leave): the dialog says what will stop and
// asks for the reason, which the exchange keeps with the agreement.
"use strict";
import { $ } from "./page.js";

let pending = null;

export function decide({ title, effect, confirm, run }) {
  pending = run;
  $("decide-title").textContent = title;
  $("decide-effect").textContent = effect;
  $("decide-confirm").textContent = confirm;
  $("decide-reason").value = "";
  $("decide-error").textContent = "";
  $("decide").showModal();
  $("decide-reason").focus();
}

export function initDecision() {
  $("decide-cancel").addEventListener("click", () => $("decide").close());
  $("decide-confirm").addEventListener("click", async () => {
    const reason = $("decide-reason").value.trim();
    if (!reason) { $("decide-error").textContent = "Give a reason: the other parties and the audit record keep it."; return; }
    $("decide-confirm").disabled = true;
    try {
      await pending(reason);
      $("decide").close();
    } catch (err) {
      $("decide-error").textContent = err.message;
    } finally {
      $("decide-confirm").disabled = false;
    }
  });
}
