// One plan: its events newest first, following the plan's stream live,
// paging backwards, each event checked in the browser (check.js), and the
// whole event in a detail panel with its permalink (#seq=N).

import { ApiError, follow, getJson } from "./api.js";
import { Broken, GENERATION, PlanChecker } from "./check.js";
import { ago, badge, el, num, replace, summary, time, visible } from "./dom.js";
import { pins } from "./keys.js";
import { matches, validPatterns } from "./plans.js";
import { b64encode } from "./verify.js";

const PAGE = 50;
/** Most events kept on the page; the oldest shown go first (paging back brings them again). */
const MAX_ROWS = 2000;
/**
 * Seconds after which a quorum's cosignatures no longer make the page
 * green. Healthy witnesses cosign again every minute; a daemon that keeps
 * showing an old cosigned checkpoint may be hiding what was appended since
 * (it showed the witnesses more). Ten minutes leaves room for clock skew.
 */
const MAX_COSIGNATURE_AGE = 10 * 60;

/**
 * When `quorum` of the checked cosignatures last vouched: the quorum-th
 * newest `time` (Unix seconds), or null when fewer count. One dated more
 * than MAX_COSIGNATURE_AGE ahead of this computer's clock does not count:
 * no wait would ever make it stale.
 */
function quorumTime(cosigned, quorum, now) {
  const times = cosigned.map((c) => c.time).filter((t) => t <= now + MAX_COSIGNATURE_AGE).sort((a, b) => b - a);
  return quorum > 0 && times.length >= quorum ? times[quorum - 1] : null;
}

export function planView(root, planId) {
  const events = new Map(); // seq -> event
  const rows = new Map(); // seq -> tr
  const checker = new PlanChecker(planId);
  let generation = checker.generation; // of the memory the verdicts below were judged against
  let newest = 0, oldest = Infinity, stop = null, timer = null, running = false, again = false;
  // The size a quorum of the pinned witnesses cosigned, as renderWitnessed
  // last found it (0: none); compared with the checkpoint each time the
  // verdict is drawn, since a newer checkpoint may arrive before it.
  let witnessedSize = 0;
  // When that quorum cosigned (Unix seconds; null: no quorum), and the bundle
  // it was found in: the verdict and the witness line compare it with the
  // clock each time they are drawn, so it goes stale on screen even while a
  // pass is stuck on a daemon that never answers.
  let witnessedAt = null, witnessed = null;
  // Permalinked events fetched alone: not part of a range, so the seqs
  // between them and the rest are not "withheld".
  const singles = new Set();
  // While witnesses are pinned, draw and verify again on a timer
  // (renderVerdict): the heads log is written every few seconds, cosigned
  // every minute.
  let witnessTimer = null, witnessDue = 0, witnessWait = 5000, left = false;
  let deletedView = false, deletedPass = 0; // the daemon answered 410: only the deletion is checked
  // Whether the table's newest end follows the live stream. Paging back past
  // MAX_ROWS slides the window: the newest rows go and live rows pause.
  let following = true;

  const title = el("h1", {}, "Plan ", el("code", { class: "id" }, planId));
  const head = el("p", { id: "plan-head", class: "muted" }, "loading…");
  const summaryLine = el("p", { id: "plan-verdict", class: "verdict pending", role: "status" }, "checking…");
  const keyLine = el("p", { id: "key-source", class: "muted" });
  const witnessLine = el("p", { id: "witnessed", class: "muted" }, "witnessed: checking…");
  const live = el("span", { id: "live-state", class: "live-state" }, "connecting");
  const filter = el("input", { id: "event-filter", type: "search", placeholder: "type pattern, e.g. step.>", "aria-label": "Filter events by type pattern", value: new URLSearchParams(location.search).get("types") || "", autocomplete: "off" });
  const tbody = el("tbody");
  const older = el("button", { id: "older", hidden: true }, "Older events");
  const newer = el("button", { id: "newer", hidden: true }, "Back to the newest events");
  const detail = el("aside", { id: "detail", hidden: true, "aria-label": "Event detail", tabindex: "-1" });
  const table = el("table", { id: "events", class: "data" },
    el("thead", {}, el("tr", {}, el("th", { scope: "col", class: "num" }, "Seq"), el("th", { scope: "col" }, "State"),
      el("th", { scope: "col" }, "Time"), el("th", { scope: "col" }, "Type"), el("th", { scope: "col", class: "wide" }, "Actor"),
      el("th", { scope: "col", class: "wide" }, "Payload"))),
    tbody);
  replace(root, el("section", { class: "plan-header" }, title, head, summaryLine, keyLine, witnessLine),
    el("section", { class: "toolbar" }, el("label", {}, "Types ", filter), live),
    el("div", { class: "split" }, el("div", { class: "table-wrap" }, newer, table, older), detail));

  const stateOf = (seq) => {
    const s = checker.results.get(seq);
    // Rows checked against a checkpoint that the plan's break discredits (a
    // fork, a signed deletion) are not shown as verified any more.
    if (checker.error && s && s.state !== "broken") return { ...s, state: "pending", reason: `not trusted: ${checker.error}` };
    return s || { state: "pending", reason: checker.checkpoint ? "after the checkpoint; waiting for the next" : null };
  };
  // Breaks that later answers cannot undo, for the page's life (or until
  // a Forget): the instance's signed record of the plan's deletion, and a
  // witnessed bundle that did not check out (a fork is the checker's own
  // `forked`).
  let deleted = null, badBundle = null;
  const breakPlan = (why) => {
    checker.error = why;
    renderVerdict();
    for (const seq of events.keys()) renderRow(seq);
  };

  const renderRow = (seq) => {
    const e = events.get(seq);
    let tr = rows.get(seq);
    if (!tr) {
      tr = el("tr", { tabindex: "0", "data-seq": seq });
      tr.addEventListener("click", () => select(seq));
      rows.set(seq, tr);
    }
    const s = stateOf(seq);
    tr.dataset.state = s.state;
    replace(tr, el("td", { class: "num" }, num(seq)), el("td", {}, badge(s.state, s.reason)), el("td", {}, time(e.created_at)),
      el("td", {}, el("code", {}, visible(e.type))), el("td", { class: "wide actor" }, visible(e.actor ?? "—")),
      el("td", { class: "wide payload" }, e.redacted === true ? "(erased)" : visible(summary(e.payload))));
    tr.hidden = !matches(validPatterns(filter.value) ? filter.value : "", e.type);
    return tr;
  };

  /** Inserts events (any order) keeping the table newest first and at most
   * MAX_ROWS long. What was just asked for stays: rows older than the table
   * (a page back) push out the newest end, and live rows then
   * pause until "Back to the newest events"; newer rows push out the oldest. */
  const add = (list) => {
    let back = false;
    for (const e of list) {
      if (!Number.isSafeInteger(e?.seq)) continue;
      singles.delete(e.seq); // part of a range now
      if (events.has(e.seq)) continue;
      back ||= events.size > 0 && e.seq < oldest;
      events.set(e.seq, e);
      newest = Math.max(newest, e.seq);
      oldest = Math.min(oldest, e.seq);
    }
    while (events.size > MAX_ROWS) {
      const gone = back ? newest : oldest;
      events.delete(gone);
      rows.delete(gone);
      checker.results.delete(gone);
      singles.delete(gone);
      if (back) { newest = Math.max(...events.keys()); following = false; }
      else oldest = Math.min(...events.keys());
    }
    // Rows are put in order touching only those out of place: a row moved
    // or taken out of the page loses the keyboard focus.
    const wanted = [...events.keys()].sort((a, b) => b - a).map(renderRow);
    const keep = new Set(wanted);
    for (const tr of [...tbody.children]) if (!keep.has(tr)) tr.remove();
    let at = tbody.firstElementChild;
    for (const tr of wanted) {
      if (tr === at) at = at.nextElementSibling;
      else tbody.insertBefore(tr, at);
    }
    older.hidden = !(oldest > 1);
    newer.hidden = following;
    // The rows just added are not checked yet: the verdict must not stay an old green one.
    if (checker.checkpoint || checker.error || checker.unavailable) renderVerdict();
  };

  const fetchRange = async (after, limit) => (await getJson(`/api/plans/${planId}/events?after=${after}&limit=${limit}`)).events;

  const verify = async () => {
    if (deletedView) return; // only the deletion is checked now
    if (running) { again = true; return; }
    running = true;
    try {
      do {
        again = false;
        let failed = null;
        try { await checker.refreshCheckpoint(); } catch (e) { failed = e; }
        if (failed instanceof ApiError && failed.status === 410) {
          // Deleted while the page was open (the rows shown stay as they were checked).
          await enterDeletedView();
          return;
        }
        // Forgotten (in another tab) since the last pass: what was judged
        // against the memory from before no longer stands. A bundle that
        // fails for its own reasons fails again at this pass's check.
        if (checker.generation !== generation) {
          generation = checker.generation;
          deleted = null; badBundle = null; checker.error = null;
          witnessedSize = 0; witnessedAt = null; witnessed = null;
        }
        // Only a failed check breaks the plan; a daemon out of reach does not.
        if (failed === null) {
          checker.error = checker.forked || deleted || badBundle || null;
          checker.unavailable = null;
        } else if (failed instanceof Broken) checker.error = failed.message;
        else checker.unavailable = failed.message;
        if (!checker.error && !checker.unavailable) await checker.checkEvents([...events.values()], events);
        renderVerdict();
        for (const seq of events.keys()) renderRow(seq);
        await renderRedactions();
        await renderWitnessed();
        renderVerdict(); // again: the witnessed size may show events not shown
        refreshDetail();
      } while (again);
    } finally { running = false; }
  };
  const schedule = () => { clearTimeout(timer); timer = setTimeout(verify, 300); };

  /** The witness line of the last bundle checked, its age as of now. */
  const drawWitnessLine = () => {
    const w = witnessed;
    if (!w) return;
    const now = Date.now() / 1000;
    const names = w.cosigned.map((c) => c.name).join(", ");
    const met = witnessedAt !== null;
    // A clock behind the witnesses' reads as no age at all, not a negative one.
    const age = met ? Math.max(0, Math.round(now - witnessedAt)) : 0;
    const stale = met && age > MAX_COSIGNATURE_AGE;
    const when = stale ? `, ${ago(age)} ago: too old to count (stale)` : `, ${ago(age)} ago`;
    const early = !met && w.cosigned.length >= w.quorum ? " (cosignatures dated more than 10 minutes ahead of this computer's clock do not count)" : "";
    const quorum = w.pinned ? `${num(w.cosigned.length)} of ${num(w.pinned)} pinned witnesses cosigned${names ? ` (${names})` : ""}; quorum ${num(w.quorum)} ${met ? `met${when}` : `NOT met${early}`}`
      : `${num(w.lines)} cosignature line(s) present, none checked: no witness key pinned`;
    witnessLine.textContent = `Witnessed size ${num(w.size)} (heads log entry ${num(w.headsIndex)} of ${num(w.headsSize)}): ${quorum}.`;
    witnessLine.className = met && !stale ? "pinned" : "muted";
  };

  const renderVerdict = () => {
    if (deletedView) return; // the deletion's verdict is drawn by showDeleted
    // With witnesses pinned, green needs their quorum, cosigned within
    // MAX_COSIGNATURE_AGE, over this checkpoint: a daemon holding the log
    // key signs whatever fork it likes, and only a witness can say it showed
    // another history elsewhere, or more of this one since.
    const { witnesses, quorum } = pins();
    const now = Date.now() / 1000;
    const fresh = witnessedAt !== null && now - witnessedAt <= MAX_COSIGNATURE_AGE;
    const unwitnessed = witnesses.length > 0 && !(fresh && witnessedSize > 0 && witnessedSize >= (checker.checkpoint?.size ?? Infinity));
    drawWitnessLine();
    const all = [...events.keys()].map(stateOf);
    const broken = all.filter((s) => s.state === "broken").length;
    const verified = all.filter((s) => s.state === "verified").length;
    const redacted = all.filter((s) => s.state === "redacted").length;
    const pending = all.length - broken - verified - redacted;
    let cls, text;
    if (checker.error) { cls = "broken"; text = `Plan broken: ${checker.error}`; }
    else if (checker.unavailable) { cls = "pending"; text = `Cannot check now: ${checker.unavailable}`; }
    else if (broken) { cls = "broken"; text = `Plan broken: ${num(broken)} of ${num(all.length)} shown events fail their checks`; }
    else {
      // Signed events newer than any shown (the checkpoint's or the witnessed
      // size): not yet arrived, or withheld; never a green verdict.
      const ranged = [...events.keys()].filter((seq) => !singles.has(seq));
      const top = ranged.length ? Math.max(...ranged) : 0;
      const unseen = Math.max(checker.checkpoint?.size ?? 0, checker.witnessed?.size ?? 0) - top;
      // Seqs missing between the oldest and newest shown: withheld.
      const gaps = ranged.length ? top - Math.min(...ranged) + 1 - ranged.length : 0;
      // An erased payload with no checked record of its redaction may have
      // been erased behind the log's back: not a green verdict.
      const unrecorded = [...events.keys()].filter((seq) => stateOf(seq).state === "redacted" && !checker.results.get(seq)?.record).length;
      cls = pending || unseen > 0 || gaps > 0 || unwitnessed || unrecorded ? "pending" : "verified";
      text = `${num(verified)} verified, ${num(redacted)} redacted, ${num(pending)} pending of ${num(all.length)} shown, against checkpoint size ${num(checker.checkpoint?.size ?? 0)}`;
      if (unseen > 0) text += `; ${num(unseen)} newer signed event(s) not shown (yet)`;
      if (gaps > 0) text += `; ${num(gaps)} event(s) between those shown not shown (withheld)`;
      if (unrecorded) text += `; ${num(unrecorded)} redacted event(s) without a checked record of the redaction`;
      if (unwitnessed && witnessedAt !== null && !fresh) text += `; your pinned witnesses last cosigned ${ago(now - witnessedAt)} ago, more than ${num(MAX_COSIGNATURE_AGE / 60)} minutes: this may be an old history`;
      else if (unwitnessed) text += `; not (yet) cosigned up to this checkpoint by ${num(quorum)} of your pinned witnesses`;
    }
    // Pinned witnesses: drawn and checked again on a timer, soon while not
    // caught up or out of reach (5 s doubling to a minute), and once
    // witnessed every minute, or when the quorum turns stale if sooner:
    // cosignatures age on a quiet plan, and an old quorum must not stay
    // green. A pass due later than the wait now wanted is brought forward.
    // A broken plan stays broken: no timer.
    if (witnesses.length > 0 && !left && !checker.error) {
      const waiting = unwitnessed || Boolean(checker.unavailable);
      const staleAt = witnessedAt === null ? Infinity : (witnessedAt + MAX_COSIGNATURE_AGE + 1) * 1000;
      const wait = waiting ? witnessWait : Math.max(1000, Math.min(60000, staleAt - Date.now()));
      if (!witnessTimer || witnessDue > Date.now() + wait) {
        clearTimeout(witnessTimer);
        witnessDue = Date.now() + wait;
        witnessTimer = setTimeout(() => { witnessTimer = null; renderVerdict(); schedule(); }, wait);
        if (waiting) witnessWait = Math.min(60000, witnessWait * 2);
      }
      if (!waiting) witnessWait = 5000;
    }
    summaryLine.className = `verdict ${cls}`;
    summaryLine.textContent = text;
    renderKeyLine();
  };

  const renderKeyLine = () => {
    if (checker.source === "pinned") {
      keyLine.textContent = `Checked in this browser against the log key you pinned: ${checker.keyName}`;
    } else if (checker.source === "served") {
      keyLine.textContent = "Checked in this browser, but only against the log key this same daemon serves. That shows the page matches what the daemon signed, not that the daemon is honest: pin the key from a source you trust (Keys).";
    }
    keyLine.className = checker.source === "pinned" ? "pinned" : "muted served";
  };

  // A deleted plan serves no events, checkpoint or proof (410). What can be
  // checked is the signed record of its deletion, its witnessed bundle,
  // against what this browser kept of the log. Never a green verdict: no
  // event is shown, and the daemon's 410 alone proves nothing.
  const showDeleted = async () => {
    // One pass at a time has the last word: a later one (a Forget in
    // another tab) supersedes it, and only the newest sets the timer.
    const pass = ++deletedPass;
    clearTimeout(witnessTimer);
    // A break this page proved while the plan was live stays (until a Forget).
    if (checker.error) {
      summaryLine.className = "verdict broken";
      summaryLine.textContent = `Plan broken: ${checker.error}`;
      witnessLine.textContent = "Deletion: not checked (the plan was broken before).";
      witnessLine.className = "broken";
      return;
    }
    const unchecked = "The daemon says this plan was deleted: it serves no events, so nothing here is checked.";
    // While the deletion is not in a signed heads checkpoint yet, or out
    // of reach: checked again, for as long as the page is open.
    const later = () => { if (!left) witnessTimer = setTimeout(showDeleted, witnessWait); witnessWait = Math.min(60000, witnessWait * 2); };
    let d;
    try {
      d = await checker.checkDeleted();
    } catch (e) {
      if (pass !== deletedPass || left) return;
      const broken = e instanceof Broken;
      summaryLine.className = `verdict ${broken ? "broken" : "pending"}`;
      summaryLine.textContent = broken ? `Plan broken: ${e.message}` : unchecked;
      witnessLine.textContent = broken ? "Deletion: broken (above)." : `Deletion: cannot check now: ${e.message}`;
      witnessLine.className = broken ? "broken" : "muted";
      if (!broken) later();
      return;
    }
    if (pass !== deletedPass || left) return;
    summaryLine.className = "verdict pending";
    if (d.unsigned) {
      summaryLine.textContent = "The daemon says this plan was deleted, and serves no signed record of it (a plan deleted before this instance kept a heads log has none): nothing here is checked.";
      witnessLine.textContent = "Deletion: no signed record served (checked again later).";
      witnessLine.className = "muted";
      later();
      return;
    }
    if (d.live !== undefined) {
      summaryLine.textContent = `The daemon says this plan was deleted, yet the instance's signed heads log records it live at size ${num(d.live)}: the 410 is not backed by a signed deletion. Nothing here is checked.`;
      witnessLine.textContent = "Deletion: not in the signed heads log.";
      witnessLine.className = "muted";
      renderKeyLine();
      later();
      return;
    }
    if (d.pending) {
      summaryLine.textContent = unchecked;
      witnessLine.textContent = "Deletion: no signed heads checkpoint the daemon can prove it in yet (checked again shortly).";
      witnessLine.className = "muted";
      later();
      return;
    }
    const rows = events.size ? "The events still shown were checked while it was live; none is checked any more." : "Its events are no longer served, so none is shown or checked.";
    summaryLine.textContent = `This plan was deleted at size ${num(d.size)}: the instance's signed heads log records it, checked in this browser. ${rows}`
      + (d.grew ? " This browser last checked it at a smaller size; the growth since cannot be checked (no proof of a deleted plan is served)." : "")
      + (d.firstSight ? " No checkpoint of it under this key was checked before, in this page or kept by this browser (a first sight)." : "");
    // Held to the clock as a live plan's quorum is: an old cosigned tree in
    // which the deletion is the plan's latest entry may hide a later one.
    const names = d.cosigned.map((c) => c.name).join(", ");
    const now = Date.now() / 1000;
    const at = d.pinned > 0 ? quorumTime(d.cosigned, d.quorum, now) : null;
    const age = at === null ? 0 : Math.max(0, Math.round(now - at));
    const fresh = at !== null && age <= MAX_COSIGNATURE_AGE;
    const quorum = at === null ? "NOT met" : `met, ${ago(age)} ago${fresh ? "" : ": too old to count (stale)"}`;
    witnessLine.textContent = d.pinned
      ? `Deletion: ${num(d.cosigned.length)} of ${num(d.pinned)} pinned witnesses cosigned a heads log that records it${names ? ` (${names})` : ""}; quorum ${num(d.quorum)} ${quorum}.`
      : "Deletion: no witness key pinned, so its cosignatures are not checked.";
    witnessLine.className = fresh ? "pinned" : "muted";
    renderKeyLine();
    // Cosignatures age: with witnesses pinned the line is drawn again, each
    // minute while fresh (or when it turns stale, if sooner), and backing
    // off from 5 s while not.
    if (d.pinned > 0) {
      if (fresh) witnessWait = Math.max(1000, Math.min(60000, (at + MAX_COSIGNATURE_AGE + 1) * 1000 - Date.now()));
      later();
    }
  };

  // From a 410 on: the stream stops, no live pass runs, and only the
  // plan's signed deletion is checked.
  const enterDeletedView = async () => {
    deletedView = true;
    stop?.();
    live.textContent = "stopped: plan deleted";
    live.className = "live-state stopped";
    await showDeleted();
  };

  const renderWitnessed = async () => {
    // The last quorum stays until this check ends, for the verdict to age
    // while a daemon stalls the bundle: it can only turn pending, since
    // the verdict holds it against the clock and the current checkpoint.
    const clear = () => { witnessedSize = 0; witnessedAt = null; witnessed = null; };
    if (checker.error || checker.unavailable) {
      clear();
      // What was said against an earlier checkpoint no longer holds.
      witnessLine.textContent = "Witnessed: not checked (the checkpoint was not checked).";
      witnessLine.className = "muted";
      return;
    }
    try {
      const w = await checker.checkWitnessed();
      if (w.pending || w.deleted) clear();
      if (w.pending) { witnessLine.textContent = "Witnessed: not yet in the heads log (it is recorded every few seconds)."; witnessLine.className = "muted"; return; }
      if (w.deleted) {
        // The instance signed that this plan is gone: rows shown for it are not its history.
        witnessLine.textContent = `Witnessed: the instance's heads log records this plan as deleted (at size ${num(w.size)}).`;
        witnessLine.className = events.size ? "broken" : "muted";
        if (events.size && !checker.error) { deleted = "the instance's signed heads log records this plan as deleted"; breakPlan(deleted); }
        return;
      }
      witnessedAt = w.pinned > 0 ? quorumTime(w.cosigned, w.quorum, Date.now() / 1000) : null;
      witnessedSize = witnessedAt !== null ? w.size : 0;
      witnessed = w;
      drawWitnessLine();
    } catch (e) {
      clear();
      witnessLine.textContent = e instanceof Broken ? `Witnessed: broken: ${e.message}` : `Witnessed: cannot check now: ${e.message}`;
      witnessLine.className = e instanceof Broken ? "broken" : "muted";
      // A bundle that does not check out breaks the plan, with or without
      // pinned witnesses, for as long as the page is open or until a Forget (each pass would
      // otherwise show the old verdict until the bundle is checked again).
      // A witnessed history the current checkpoint is not part of is a fork.
      if (e instanceof Broken && !checker.error) {
        badBundle = checker.forked ? null : `witnessed bundle: ${e.message}`;
        breakPlan(checker.forked || badBundle);
      }
    }
  };

  const renderRedactions = async () => {
    for (const [seq, e] of events) {
      if (e.redacted !== true || stateOf(seq).state !== "redacted") continue;
      try {
        const r = await checker.redaction(seq);
        const s = checker.results.get(seq);
        s.reason = r ? `redacted: ${r.reason}` : r === null ? "no record in the system journal: erased behind the daemon's back?" : "no record in the newest system events";
        s.record = r;
        renderRow(seq);
      } catch { /* no read access to the system journal: the state stays */ }
    }
  };

  // ---- detail --------------------------------------------------------------
  let selected = null;
  const field = (name, value) => [el("dt", {}, name), el("dd", {}, value)];
  const refreshDetail = () => { if (selected !== null && events.has(selected)) showDetail(selected); };
  const showDetail = (seq) => {
    const e = events.get(seq);
    const s = stateOf(seq);
    const link = `/ui/plans/${planId}#seq=${seq}`;
    replace(detail,
      el("div", { class: "detail-head" }, el("h2", {}, `Event ${num(seq)}`), el("button", { id: "close-detail", "aria-label": "Close", onclick: () => select(null) }, "Close")),
      el("p", {}, badge(s.state, s.reason)),
      el("p", {}, el("a", { id: "permalink", href: link }, "Permalink")),
      el("dl", {}, field("seq", num(e.seq)), field("time", time(e.created_at)), field("type", visible(e.type)), field("actor", visible(e.actor ?? "null")),
        field("id", e.id), field("payload hash", el("code", { class: "hash" }, e.payload_hash)),
        field("prev hash", el("code", { class: "hash" }, e.prev_hash ?? "null")),
        field("signature", el("code", { class: "hash" }, e.signature)), field("key id", el("code", {}, e.key_id)),
        field("leaf hash", s.leaf ? el("code", { class: "hash" }, b64encode(s.leaf)) : "—"),
        s.record ? field("redaction", el("span", {}, visible(`${s.record.reason} (by ${JSON.stringify(s.record.by)}, `), time(s.record.at), `, system journal seq ${num(s.record.seq)})`)) : null),
      el("h3", {}, "Payload"),
      el("pre", { id: "payload", class: "payload" }, e.redacted === true ? "(erased; its hash stays in the log)" : visible(JSON.stringify(e.payload, null, 2))));
    detail.hidden = false;
    for (const [n, tr] of rows) tr.classList.toggle("selected", n === seq);
  };
  const select = (seq, push = true) => {
    selected = seq;
    if (push) history.replaceState(null, "", seq === null ? location.pathname + location.search : `${location.pathname}${location.search}#seq=${seq}`);
    if (seq === null) { detail.hidden = true; for (const tr of rows.values()) tr.classList.remove("selected"); return; }
    if (events.has(seq)) { showDetail(seq); detail.focus({ preventScroll: true }); return; }
    fetchRange(seq - 1, 1).then((list) => {
      if (!list.length) { replace(detail, el("p", {}, `No event ${seq} in this plan.`)); detail.hidden = false; return; }
      add(list); singles.add(seq); showDetail(seq); detail.focus({ preventScroll: true }); schedule();
    }).catch((e) => { replace(detail, el("p", {}, e.message)); detail.hidden = false; });
  };
  const fromHash = () => {
    const m = /^#seq=([0-9]{1,16})$/.exec(location.hash);
    if (m) select(Number(m[1]), false);
  };

  // ---- keyboard ------------------------------------------------------------
  tbody.addEventListener("keydown", (ev) => {
    const tr = ev.target.closest("tr");
    if (!tr) return;
    const visible = [...tbody.rows].filter((r) => !r.hidden);
    const at = visible.indexOf(tr);
    if (ev.key === "ArrowDown" || ev.key === "j") { visible[at + 1]?.focus(); ev.preventDefault(); }
    else if (ev.key === "ArrowUp" || ev.key === "k") { visible[at - 1]?.focus(); ev.preventDefault(); }
    else if (ev.key === "Enter") { select(Number(tr.dataset.seq)); ev.preventDefault(); }
  });
  detail.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") { const seq = selected; select(null); rows.get(seq)?.focus(); }
  });
  filter.addEventListener("input", () => {
    const ok = !filter.value.trim() || validPatterns(filter.value);
    filter.toggleAttribute("aria-invalid", !ok);
    for (const seq of events.keys()) renderRow(seq);
  });
  newer.addEventListener("click", async () => {
    try {
      const plan = await getJson(`/api/plans/${planId}`);
      const page = await fetchRange(Math.max(0, plan.head_seq - PAGE), Math.min(PAGE, plan.head_seq));
      events.clear(); rows.clear(); checker.results.clear(); singles.clear();
      newest = 0; oldest = Infinity; following = true;
      add(page); schedule();
    } catch (e) { head.textContent = e.message; }
  });
  older.addEventListener("click", async () => {
    const after = Math.max(0, oldest - 1 - PAGE);
    try { add(await fetchRange(after, oldest - 1 - after)); schedule(); } catch (e) { head.textContent = e.message; }
  });
  window.addEventListener("hashchange", fromHash);
  // Another tab's Forget: checked again now, not at the next event (a
  // broken plan has no timer).
  const onStorage = (e) => {
    if (e.key !== GENERATION) return;
    // Forgotten: what was judged against the memory before no longer stands.
    if (deletedView) { witnessWait = 5000; deleted = null; badBundle = null; checker.error = null; showDeleted(); } else schedule();
  };
  window.addEventListener("storage", onStorage);

  // ---- live ----------------------------------------------------------------
  const onEvent = async (id, event) => {
    if (!following) return; // paged back: "Back to the newest events" reloads them
    if (!Number.isSafeInteger(event?.seq) || event.seq <= newest) return; // already shown
    if (event.seq > newest + 1 && newest > 0) {
      // A gap (never expected from the daemon): fill it from storage.
      let after = newest;
      while (after < event.seq - 1) {
        const page = await fetchRange(after, Math.min(1000, event.seq - 1 - after));
        if (!page.length) break;
        add(page);
        after = page[page.length - 1].seq;
      }
    }
    add([event]);
    replace(head, `Head seq ${num(newest)} · last event `, time(event.created_at));
    schedule();
  };

  (async () => {
    let plan;
    try {
      plan = await getJson(`/api/plans/${planId}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 410) {
        head.textContent = e.message;
        await enterDeletedView();
        return;
      }
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      plan = { head_seq: 0, count: 0 };
    }
    replace(head, `Head seq ${num(plan.head_seq)} · ${num(plan.count)} events · first `, time(plan.first_at), " · last ", time(plan.last_at));
    if (plan.head_seq > 0) add(await fetchRange(Math.max(0, plan.head_seq - PAGE), Math.min(PAGE, plan.head_seq)));
    fromHash();
    // Left while loading: no stream for a view that is gone (it would
    // follow, and verify, for the page's life).
    if (left) return;
    stop = follow(`/api/plans/${planId}/events/stream`, {}, newest, onEvent, (state, problem) => {
      if (deletedView) return;
      live.textContent = problem ? `${state}: ${problem.title || problem.detail}` : state;
      live.className = `live-state ${state}`;
      // The stream ends on a deletion: the next pass finds the 410.
      if (problem?.status === 410) schedule();
    });
    await verify();
  })().catch((e) => { head.textContent = `Could not load the plan: ${e.message}`; });

  return () => { stop?.(); clearTimeout(timer); clearTimeout(witnessTimer); left = true; window.removeEventListener("hashchange", fromHash); window.removeEventListener("storage", onStorage); };
}
