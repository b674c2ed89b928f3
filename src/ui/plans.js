// The plan list: heads, counts, first and last times, and a live badge fed
// by the global stream (filtered by an event type pattern).

import { ApiError, follow, getJson } from "./api.js";
import { el, num, replace, time } from "./dom.js";

const PAGE = 100;
const SEGMENT = /^([a-z][a-z0-9_]*|\*)$/;

/** NATS-style patterns as the daemon reads them (docs/http-api.md). */
// As the daemon's `types=`: empty text is no filter, but an empty pattern
// between commas ("a,,b", ",") is malformed, not dropped.
export function validPatterns(text) {
  if (!text.trim()) return true;
  const list = text.split(",").map((p) => p.trim());
  return list.every((p) => {
    const segs = p.split(".");
    return segs.every((s, i) => SEGMENT.test(s) || (s === ">" && i === segs.length - 1));
  });
}

export function matches(patterns, type) {
  const list = patterns.split(",").map((p) => p.trim()).filter(Boolean);
  if (!list.length) return true;
  const t = type.split(".");
  return list.some((p) => {
    const s = p.split(".");
    for (let i = 0; i < s.length; i++) {
      if (s[i] === ">") return i < t.length;
      if (i >= t.length || (s[i] !== "*" && s[i] !== t[i])) return false;
    }
    return s.length === t.length;
  });
}

export function plansView(root, navigate) {
  const rows = new Map();
  let stop = null, position = null;
  const params = new URLSearchParams(location.search);
  const search = el("input", { id: "plan-search", type: "search", placeholder: "plan id", "aria-label": "Search by plan id", autocomplete: "off" });
  const types = el("input", { id: "type-filter", type: "search", placeholder: "type pattern, e.g. plan.*, step.>", "aria-label": "Filter by event type pattern", value: params.get("types") || "", autocomplete: "off" });
  const live = el("span", { id: "live-state", class: "live-state" }, "connecting");
  const note = el("p", { class: "muted", id: "plans-note" });
  const tbody = el("tbody");
  const more = el("button", { id: "more-plans", hidden: true }, "Load more plans");
  const table = el("table", { id: "plans", class: "data" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Plan"), el("th", { scope: "col", class: "num" }, "Head seq"),
      el("th", { scope: "col", class: "num" }, "Count"), el("th", { scope: "col", class: "wide" }, "First"),
      el("th", { scope: "col" }, "Last"), el("th", { scope: "col" }, "Live"))),
    tbody);
  replace(root, el("section", { class: "toolbar" },
    el("label", {}, "Search ", search), el("label", {}, "Types ", types), live), note, table, more);

  const row = (plan) => {
    let r = rows.get(plan.plan_id);
    if (!r) {
      // The cells are made once and then updated: a link taken out of the
      // page (to be put back) loses the keyboard focus.
      const link = el("a", { href: `/ui/plans/${plan.plan_id}`, class: "plan-link", "data-nav": true }, plan.plan_id);
      const cells = { head: el("td", { class: "num head-seq" }), count: el("td", { class: "num" }), first: el("td", { class: "wide" }), last: el("td") };
      r = { plan, tr: el("tr", { "data-plan": plan.plan_id }), cells, badge: el("span", { class: "live-badge", hidden: true }), fresh: 0 };
      r.tr.append(el("td", {}, link), cells.head, cells.count, cells.first, cells.last, el("td", {}, r.badge));
      rows.set(plan.plan_id, r);
    }
    r.plan = { ...r.plan, ...plan };
    replace(r.cells.head, num(r.plan.head_seq));
    replace(r.cells.count, num(r.plan.count));
    replace(r.cells.first, time(r.plan.first_at));
    replace(r.cells.last, time(r.plan.last_at));
    return r;
  };

  const applySearch = () => {
    const q = search.value.trim().toLowerCase();
    for (const r of rows.values()) r.tr.hidden = Boolean(q) && !r.plan.plan_id.includes(q);
  };
  search.addEventListener("input", applySearch);
  search.addEventListener("change", applySearch);
  search.addEventListener("keydown", (e) => {
    const q = search.value.trim().toLowerCase();
    if (e.key === "Enter" && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(q)) navigate(`/ui/plans/${q}`);
  });

  let after = "";
  const load = async () => {
    const page = await getJson(`/api/plans?limit=${PAGE}${after ? `&after=${after}` : ""}`);
    // The all-plans stream resumes from the first page's position.
    if (position === null && Number.isSafeInteger(page.position)) position = page.position;
    for (const p of page.plans) tbody.append(row(p).tr);
    after = page.next_after || "";
    more.hidden = !page.next_after;
    if (!rows.size) note.textContent = "No plans yet. Events appended now show up here live.";
    applySearch();
  };
  more.addEventListener("click", () => load().catch((e) => { note.textContent = e.message; }));

  const onEvent = (id, event) => {
    position = id;
    if (!event || typeof event.plan_id !== "string") return;
    note.textContent = "";
    const known = rows.has(event.plan_id);
    // The stream starts from a position read before the list: an event
    // the list already counts may come again.
    if (known && !(event.seq > rows.get(event.plan_id).plan.head_seq)) return;
    const r = row({ plan_id: event.plan_id, head_seq: event.seq, count: event.seq, last_at: event.created_at,
      ...(known ? {} : { first_at: event.seq === 1 ? event.created_at : undefined }) });
    if (!known) tbody.prepend(r.tr);
    r.fresh += 1;
    r.badge.hidden = false;
    r.badge.textContent = `+${num(r.fresh)}`;
    r.badge.title = `${num(r.fresh)} new since this page opened; last: ${event.type}`;
    applySearch();
  };

  const startStream = async () => {
    stop?.();
    const pattern = types.value.trim();
    if (pattern && !validPatterns(pattern)) {
      live.textContent = "bad pattern";
      types.setAttribute("aria-invalid", "true");
      return;
    }
    types.removeAttribute("aria-invalid");
    if (position === null) throw new Error("the plan list gave no stream position");
    stop = follow("/api/events/stream", { types: pattern }, position, onEvent, (state) => {
      live.textContent = state;
      live.className = `live-state ${state}`;
    });
  };
  types.addEventListener("change", () => {
    const url = new URL(location.href);
    if (types.value.trim()) url.searchParams.set("types", types.value.trim());
    else url.searchParams.delete("types");
    history.replaceState(null, "", url);
    startStream().catch((e) => { live.textContent = e.message; });
  });

  load().then(startStream).catch((e) => { note.textContent = `Could not list plans: ${e.message}`; });
  return () => stop?.();
}
