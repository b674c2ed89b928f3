// The federation panel, shown only to a token with the admin scope: peers
// and their status, subscriptions, outbound delivery with dead letters,
// and the witnessing health from /readyz.

import { getJson } from "./api.js";
import { el, replace, visible } from "./dom.js";

const BASE = "/api/v1/federation";

/** Whether the token may manage federation, asked without trying a route it may be refused. */
export async function hasFederationScope() {
  try { return (await getJson("/api/v1/token")).scopes.includes("admin"); } catch { return false; }
}

/** A table of objects, every value as text. */
function table(id, rows) {
  if (!rows.length) return el("p", { id, class: "muted" }, "none");
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))].slice(0, 10);
  const cell = (v) => visible(v === null || v === undefined ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  return el("table", { id, class: "data" },
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col" }, c)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, cols.map((c) => el("td", {}, cell(r[c])))))));
}

const list = (x, key) => (Array.isArray(x) ? x : Array.isArray(x?.[key]) ? x[key] : []);

export function federationView(root) {
  const out = el("div", {}, el("p", { class: "muted" }, "loading…"));
  replace(root, el("h1", {}, "Federation"), out);
  Promise.allSettled([
    getJson(`${BASE}/peers`),
    getJson(`${BASE}/events/subscriptions`),
    getJson(`${BASE}/events/messages?direction=outbound&limit=100`),
    getJson(`${BASE}/events/messages?direction=outbound&status=dead&limit=100`),
    getJson("/readyz"),
  ]).then(([peers, subs, outbound, dead, ready]) => {
    const v = (r) => (r.status === "fulfilled" ? r.value : null);
    // A request that failed is said so, never shown as an empty "none".
    const section = (id, r, pick) => (r.status === "fulfilled" ? table(id, pick(r.value))
      : el("p", { id, class: "broken" }, visible(`could not load: ${r.reason?.message ?? r.reason}`)));
    replace(out,
      el("h2", {}, "Peers"), section("fed-peers", peers, (x) => list(x, "peers")),
      el("h2", {}, "Subscriptions: inbound (peers subscribed to us)"), section("fed-subs-in", subs, (x) => list(x?.inbound, "inbound")),
      el("h2", {}, "Subscriptions: outbound (we subscribed)"), section("fed-subs-out", subs, (x) => list(x?.outbound, "outbound")),
      el("h2", {}, "Outbound delivery"), section("fed-outbound", outbound, (x) => list(x, "messages")),
      el("h2", {}, "Dead letters"), section("fed-dead", dead, (x) => list(x, "messages")),
      el("h2", {}, "Witnessing"), el("pre", { id: "fed-witnessing", class: "payload" }, JSON.stringify(v(ready)?.witnessing ?? null, null, 2)));
  });
  return null;
}
