// The key-pinning page: paste the log's verifier key and the witnesses'
// keys from a source you trust; they stay in this browser (localStorage).

import { getJson } from "./api.js";
import { el, replace } from "./dom.js";
import { forgetSeen } from "./check.js";
import { pins, savePins } from "./keys.js";

export function keysView(root) {
  const p = pins();
  const log = el("textarea", { id: "pin-log", rows: 2, spellcheck: "false", "aria-label": "Pinned log key" });
  log.value = p.log;
  const witnesses = el("textarea", { id: "pin-witnesses", rows: 4, spellcheck: "false", "aria-label": "Pinned witness keys" });
  witnesses.value = p.witnesses.join("\n");
  const quorum = el("input", { id: "pin-quorum", type: "number", min: 1, max: 32, value: p.quorum, "aria-label": "Quorum" });
  const said = el("p", { id: "pin-status", role: "status" });
  const served = el("pre", { id: "served-keys", class: "payload" }, "loading…");
  const save = el("button", { id: "pin-save", type: "submit" }, "Save pins");
  const clear = el("button", { id: "pin-clear", type: "button" }, "Forget pins");
  const forget = el("button", { id: "seen-clear", type: "button", title: "The last checkpoint checked of each plan, kept to catch a rollback or a fork between visits" }, "Forget checked checkpoints");
  const form = el("form", { class: "card" },
    el("h1", {}, "Keys"),
    el("p", {}, "The page checks signatures with keys. A key served by this daemon proves nothing against this daemon: it can sign whatever it shows. A key you pin here, copied from a source you trust (an auditor's record, a peer's pinned instance document, the operator's key ceremony), lets the page catch this daemon showing a history its key did not sign."),
    el("label", {}, "Log key (instance vkey, name+id+key)", log),
    el("label", {}, "Witness keys (cosignature/v1 vkeys, one per line)", witnesses),
    el("label", {}, "Quorum (cosignatures needed) ", quorum),
    el("div", { class: "buttons" }, save, clear, forget), said,
    el("h2", {}, "Served by this daemon (for comparison, not trust)"), served);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await savePins(log.value, witnesses.value, quorum.value);
      said.className = "verified";
      said.textContent = log.value.trim() ? "Pinned. Plans are now checked against these keys." : "Saved. No log key pinned: plans are checked against served keys only.";
    } catch (err) {
      said.className = "broken";
      said.textContent = `Not saved: ${err.message}`;
    }
  });
  forget.addEventListener("click", () => {
    try {
      forgetSeen();
    } catch (err) {
      said.className = "broken";
      said.textContent = `Forget failed (${err.message}): the checkpoints kept may be gone, but a plan open in another tab can keep its own again; close the viewer's other tabs and try again.`;
      return;
    }
    said.className = "muted";
    said.textContent = "Checked checkpoints forgotten: the next check of each plan, in this tab or another, is a first sight again.";
  });
  clear.addEventListener("click", async () => {
    log.value = ""; witnesses.value = ""; quorum.value = 1;
    await savePins("", "", 1);
    said.className = "muted";
    said.textContent = "Pins forgotten.";
  });
  replace(root, form);
  getJson("/api/v1/log/keys").then((k) => {
    const lines = [`current: ${k.current.vkey} (since ${k.current.from})`, ...k.retired.map((r) => `retired: ${r.vkey} (${r.from} to ${r.until})`)];
    served.textContent = lines.join("\n");
  }).catch((e) => { served.textContent = e.message; });
  return null;
}
