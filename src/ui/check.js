// Verifies what a plan view shows, in the browser: the plan's signed
// checkpoint, each visible event against it, the growth between two
// checkpoints, and the witnessed bundle. The daemon's answers are inputs,
// never verdicts.

import { ApiError, getJson, getText } from "./api.js";
import { logKeys, witnessKeys } from "./keys.js";
import {
  b64decode, b64encode, cryptoAvailable, entryBytes, equal, headsEntry, headsEntryPlan, leafHash,
  parseNote, payloadHash, planKey, rootFromLeaf, sha256, concat, verifyCheckpoint,
  verifyConsistency, verifyCosignatures, verifyInclusion,
} from "./verify.js";

const SYSTEM_PLAN = "00000000-0000-0000-0000-000000000000";
/** How many of the newest system-journal events are searched for redactions. */
const SYSTEM_SCAN = 5000;
const PARALLEL = 6;
/** Where the last checkpoint checked per log is kept between visits. */
const SEEN = "logbook.seen";
/** Logs whose last checkpoint is kept (the oldest entries go first). */
const MAX_SEEN = 1000;
/**
 * The memory's generation: each Forget starts a new one, kept under a key
 * of its own. A tab left open, or a check on its way, that still writes
 * the generation it began under writes where no one reads any more, and
 * cannot undo the Forget (tabs see each other's writes late, and in no
 * lock).
 */
export const GENERATION = "logbook.seen-generation";

/** The current generation; null when storage cannot be read (then nothing is kept or dropped). */
function generation() {
  try { return localStorage.getItem(GENERATION) || ""; } catch { return null; }
}

/** Where generation `gen`'s memory is kept (the first at `SEEN`, as before generations). */
const seenKey = (gen) => (gen ? `${SEEN}.${gen}` : SEEN);

/**
 * Where a proven fork of log `id` is kept in generation `gen`: a key of its
 * own, written once and never by a plain keep. The memory is one text that
 * every tab rewrites, and tabs see each other's writes late, so a tab
 * keeping a plain checkpoint at the moment another proves a fork could
 * write over the mark; it cannot write over this key.
 */
const forkKey = (gen, id) => `${seenKey(gen)}#${id}`;

/**
 * Where the checked deletion of log `id` is kept in generation `gen`
 * (`{size, root}`), written once as a fork is: a plan's id is never used
 * again, so any live checkpoint of that log afterwards is a second history.
 */
const deletionKey = (gen, id) => `${seenKey(gen)}!${id}`;

/** Keys of each kind (forks, deletions) of one generation kept at most: a daemon can name as many logs as it likes. */
const MAX_MARKS = 1000;

/**
 * The longest log id kept: an id holds the key's name, which a served key
 * chooses, and one key must not fill the storage every check writes to.
 */
const MAX_ID_CHARS = 1024;

/** The value kept under `key`, or null. */
function keptAt(gen, key) {
  try { return gen === null ? null : localStorage.getItem(key); } catch { return null; }
}

/** Writes `value` under `key` once: not over a value kept, nor past `MAX_MARKS` keys of its `prefix`. */
function keepOnce(gen, id, key, prefix, value) {
  // Forgotten since (the key would be read by no one), or kept already.
  if (gen === null || generation() !== gen || id.length > MAX_ID_CHARS || keptAt(gen, key) !== null) return;
  try {
    if (Object.keys(localStorage).filter((k) => k.startsWith(prefix)).length >= MAX_MARKS) return;
    localStorage.setItem(key, value);
  } catch { /* storage full or off: the memory's own mark, if any, still holds it */ }
}

/** The fork of log `id` kept in its own key in generation `gen`, or null. */
const keptFork = (gen, id) => keptAt(gen, forkKey(gen, id));

/** Keeps `message` as the proven fork of log `id`. */
const keepFork = (gen, id, message) => keepOnce(gen, id, forkKey(gen, id), `${seenKey(gen)}#`, message);

/** A kept deletion's text form ({size, root: base64}) read back, or null. */
function deletionIn(d) {
  try {
    return d && Number.isSafeInteger(d.size) && typeof d.root === "string" ? { size: d.size, root: b64decode(d.root) } : null;
  } catch { return null; }
}

/**
 * The deletion of log `id` this browser checked in generation `gen`:
 * {size, root} or null. From its own key, else from the memory's entry
 * (which holds it too, for when the keys' bound was reached).
 */
function keptDeletion(gen, id) {
  let own = null;
  try { own = deletionIn(JSON.parse(keptAt(gen, deletionKey(gen, id)) ?? "null")); } catch { own = null; }
  return own ?? seenIn(memory(gen), id)?.deleted ?? null;
}

/**
 * Keeps checkpoint `final` as the checked deletion of log `id`, in its own
 * key and in the memory's entry, beside `kept` (the checkpoint kept before,
 * or null on a first sight, when `final` itself is kept).
 */
function keepDeletion(gen, id, final, kept) {
  keepOnce(gen, id, deletionKey(gen, id), `${seenKey(gen)}!`, JSON.stringify({ size: final.size, root: b64encode(final.root) }));
  keep(id, { ...(kept ?? final), forked: null, deleted: final }, gen);
}

/** The memory of generation `gen`, as text. */
function memory(gen) {
  try { return gen === null ? null : localStorage.getItem(seenKey(gen)); } catch { return null; }
}

/**
 * The last checkpoint this browser checked for a plan log under one key
 * (`id`: the origin and the instance key): {size, root} or null. A page
 * opened again, or another view of the plan, checks the next checkpoint
 * against it, so a rollback or a fork since the reader last looked is
 * caught, not trusted as a first sight.
 */
function seen(id, gen) {
  const kept = seenIn(memory(gen), id);
  const fork = keptFork(gen, id);
  // A fork kept in its own key stays proven even if another tab's late
  // write of the memory dropped its mark there.
  if (fork !== null && !kept?.forked) return { ...(kept ?? { size: -1, root: null }), forked: fork };
  return kept;
}

/** As `seen`, in `text`: a copy of the kept memory taken earlier. */
function seenIn(text, id) {
  try {
    const s = JSON.parse(text || "{}")[id];
    if (!s || !Number.isSafeInteger(s.size) || typeof s.root !== "string") return null;
    return {
      size: s.size, root: b64decode(s.root), forked: typeof s.forked === "string" ? s.forked : null,
      deleted: deletionIn(s.deleted),
    };
  } catch {
    return null;
  }
}

/**
 * Keeps `entry` ({size, root, forked?}) as what this browser saw of log
 * `id` in generation `gen`, unless another tab kept a larger checkpoint
 * meanwhile (this one was checked against an older memory): the kept size
 * never goes down, and a kept fork mark is never dropped.
 */
function keep(id, entry, gen) {
  // Forgotten since: not worth the room (the key is read by no one).
  if (gen === null || generation() !== gen || id.length > MAX_ID_CHARS) return;
  let all = {};
  try { all = JSON.parse(memory(gen) || "{}") || {}; } catch { all = {}; }
  const old = all[id];
  const oldSize = old && Number.isSafeInteger(old.size) ? old.size : -1;
  const root = b64encode(entry.root);
  // Another tab kept another root for this size: two signed histories.
  const split = oldSize === entry.size && old.root !== root
    ? `two signed roots for size ${entry.size} (fork, seen in another tab)` : null;
  const forked = entry.forked || (old && typeof old.forked === "string" ? old.forked : null) || split;
  if (forked) keepFork(gen, id, forked);
  // A checked deletion, once kept, stays (the first one: another is a fork, found by the check).
  const deleted = (old && deletionIn(old.deleted) ? old.deleted : null)
    ?? (entry.deleted ? { size: entry.deleted.size, root: b64encode(entry.deleted.root) } : null);
  const kept = oldSize > entry.size ? { size: old.size, root: old.root } : { size: entry.size, root };
  delete all[id];
  all[id] = { ...kept, ...(forked ? { forked } : {}), ...(deleted ? { deleted } : {}) };
  // Over the bound the oldest go first, but a proven fork or a checked
  // deletion only when every one kept is one.
  const ids = Object.keys(all);
  const excess = Math.max(0, ids.length - MAX_SEEN);
  const marked = (k) => Boolean(all[k].forked || all[k].deleted);
  const plain = ids.filter((k) => !marked(k));
  const gone = [...plain, ...ids.filter(marked)].slice(0, excess);
  for (const k of gone) delete all[k];
  try { localStorage.setItem(seenKey(gen), JSON.stringify(all)); } catch { /* storage full or off: this visit still checks */ }
}

/** Forgets every checkpoint this browser kept (after an operator restored an older store, say). */
export function forgetSeen() {
  const drop = () => {
    for (const key of Object.keys(localStorage)) {
      if (key === SEEN || [".", "#", "!"].some((c) => key.startsWith(`${SEEN}${c}`))) localStorage.removeItem(key);
    }
  };
  // The new generation first: a tab that reads it reads its empty memory.
  // With the storage full, the old memory goes first to make room.
  const next = `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  try { localStorage.setItem(GENERATION, next); } catch { drop(); localStorage.setItem(GENERATION, next); }
  drop();
}

const FORGOTTEN_MEANWHILE = "this browser's checked checkpoints were forgotten while this one was checked; try again";

/** A check that failed: what the daemon served does not verify. */
export class Broken extends Error {}

export class PlanChecker {
  constructor(planId) {
    this.planId = planId;
    this.checkpoint = null; // {size, root, note, text}
    this.source = null; // "pinned" | "served"
    this.keyName = null;
    this.error = null; // plan-level break
    this.results = new Map(); // seq -> {state, reason, leaf}
    this.witnessed = null;
    this.redactions = null;
    this.forked = null; // a proven rollback or fork: stays, until a Forget
    this.generation = generation(); // of the memory this page's checks are from
  }

  /**
   * Fetches and checks the current checkpoint; checks it extends the last
   * one. Fetched again (four fetches at most) when another tab kept a
   * larger checkpoint while the answer was on its way, or when the memory
   * was forgotten meanwhile: then it was checked against the memory from
   * before (a fork proven against it included), and is checked again as a
   * first sight.
   */
  async refreshCheckpoint() {
    if (!cryptoAvailable()) throw new Error("this page is not a secure context (https or localhost): WebCrypto is unavailable, nothing can be checked");
    let again = null;
    for (let attempt = 0; attempt < 4; attempt += 1) {
      const gen = this.adoptGeneration();
      let outcome;
      try {
        outcome = await this.checkCheckpoint(gen);
      } catch (e) {
        if (generation() === gen) throw e;
        outcome = { again: FORGOTTEN_MEANWHILE };
      }
      if (generation() !== gen) outcome = { again: FORGOTTEN_MEANWHILE };
      if (outcome.checkpoint) return outcome.checkpoint;
      again = outcome.again;
    }
    throw new Error(again);
  }

  /**
   * `refreshCheckpoint`'s checks against generation `gen` of the memory:
   * `{checkpoint}` checked and kept, or `{again}` (why it must be fetched again).
   */
  async checkCheckpoint(gen) {
    if (this.forked) throw new Broken(this.forked); // proven once, whatever is served now
    // What this browser kept before the request is sent: an answer smaller
    // than it is a rollback. One kept later (another tab, while the answer
    // was on its way) may just be newer than the answer.
    const snapshot = memory(gen);
    const note = await getText(`/api/plans/${this.planId}/checkpoint`);
    const { source, keys } = await logKeys();
    this.source = source;
    const { verified, instance, error } = await signedByOne(note, keys, (k) => planKey(k, this.planId));
    if (!verified) {
      throw new Broken(`checkpoint not signed by the ${source === "pinned" ? "pinned" : "served"} log key (${error?.message})`);
    }
    this.keyName = instance.text;
    const next = { ...verified.checkpoint, note: noteText(note) };
    const seenId = `${next.origin} ${this.keyName}`;
    this.seenId = seenId;
    const before = seenIn(snapshot, seenId);
    // Checked against what this page checked last, what this browser kept
    // before the request, and what it keeps now: another tab may have seen a
    // larger checkpoint since. The kept one is read again after the checks
    // (they wait on the daemon, and other tabs keep meanwhile) until it is
    // one already checked; nothing waits between that read and the keep.
    const checked = [];
    const same = (a, b) => a.size === b.size && equal(a.root, b.root);
    for (let round = 0; ; round += 1) {
      const kept = seen(seenId, gen);
      // A fork proven on an earlier visit, or in another tab, stays proven.
      if (kept?.forked) { this.forked = kept.forked; throw new Broken(kept.forked); }
      // A deletion checked before: the plan's id is never used again, so a
      // live checkpoint beyond its final one is a second history. One at or
      // below it may be an answer sent before the deletion (another tab
      // checked it meanwhile): no proof, but nothing to show as live.
      const gone = keptDeletion(gen, seenId);
      if (gone) {
        const split = [this.checkpoint, kept].find((p) => p && p.size === next.size && !equal(p.root, next.root));
        if (split) {
          const message = `two signed roots for size ${next.size} (fork)`;
          this.markForked(message, split, gen);
          throw new Broken(message);
        }
        if (next.size > gone.size || (next.size === gone.size && !equal(next.root, gone.root))) {
          const message = `this browser checked the plan's signed deletion at size ${gone.size}: a live checkpoint of size ${next.size} after it is a second history (fork)`;
          keepFork(gen, seenId, message);
          this.forked = message;
          throw new Broken(message);
        }
        throw new Error(`this browser checked the plan's signed deletion at size ${gone.size}, yet the daemon serves it live`);
      }
      const priors = [];
      for (const p of [this.checkpoint, before, kept]) if (p && ![...checked, ...priors].some((c) => same(c, p))) priors.push(p);
      if (priors.length === 0) break;
      if (round === 4) throw new Error("what this browser kept of this log changed while it was checked (other tabs); reload");
      for (const previous of priors) {
        // Two signed checkpoints that are not one history are proof for
        // good: serving the old one again afterwards must not clear the
        // break, on this visit or a later one.
        const fork = (message) => { this.markForked(message, previous, gen); return new Broken(message); };
        const known = previous === this.checkpoint || (before !== null && same(before, previous));
        if (next.size < previous.size && !known) {
          // Kept by another tab after this request left: one history with
          // the answer, or a fork; the answer may just be older. Asked again
          // (its request leaves after this one was kept), a smaller answer
          // is a rollback.
          const c = await getJson(`/api/plans/${this.planId}/consistency?from=${next.size}&to=${previous.size}`);
          const ok = await verifyConsistency(next.size, previous.size, c.proof.map(b64decode), next.root, previous.root);
          if (!ok) throw fork(`checkpoint ${previous.size} does not extend checkpoint ${next.size} (fork)`);
          return { again: `each answer was older than a checkpoint another tab kept meanwhile (size ${previous.size}): the log is growing fast, or the daemon answers old checkpoints; try again` };
        }
        if (next.size < previous.size) throw fork(`the log went back from size ${previous.size} to ${next.size}`);
        if (next.size > previous.size) {
          const c = await getJson(`/api/plans/${this.planId}/consistency?from=${previous.size}&to=${next.size}`);
          const ok = await verifyConsistency(previous.size, next.size, c.proof.map(b64decode), previous.root, next.root);
          if (!ok) throw fork(`checkpoint ${next.size} does not extend checkpoint ${previous.size} (fork)`);
        } else if (!equal(previous.root, next.root)) {
          throw fork(`two signed roots for size ${next.size} (fork)`);
        }
        checked.push(previous);
      }
    }
    this.checkpoint = next;
    keep(seenId, next, gen);
    return { checkpoint: next };
  }

  /** Records a proven fork or rollback for this page and for later visits of generation `gen`. */
  markForked(message, checkpoint, gen) {
    this.forked = message;
    if (this.seenId && checkpoint) keep(this.seenId, { ...checkpoint, forked: message }, gen);
  }

  /** Checks `events` (by seq; `bySeq` for the links) against the checkpoint. */
  async checkEvents(events, bySeq) {
    const todo = events.filter((e) => {
      const r = this.results.get(e.seq);
      return (!r || r.state === "pending") && this.checkpoint && e.seq <= this.checkpoint.size;
    });
    for (let i = 0; i < todo.length; i += PARALLEL) {
      await Promise.all(todo.slice(i, i + PARALLEL).map(async (event) => {
        // A served event that cannot even be hashed (a missing field, a
        // number JSON.parse made infinite, a proof that is not base64) is
        // broken, and must not stop the checks of the others.
        const result = await this.checkEvent(event, bySeq)
          .catch((e) => ({ state: "broken", reason: `not a well-formed event (${e.message})`, leaf: null }));
        // Only for the event checked: the page may have let it go and shown
        // another under its seq meanwhile (a reload of the newest events),
        // and a late result must not mark that one.
        if (bySeq.get(event.seq) === event) this.results.set(event.seq, result);
      }));
    }
  }

  async checkEvent(event, bySeq) {
    const { size, root } = this.checkpoint;
    const entry = entryBytes(event);
    const leaf = await leafHash(entry);
    const broken = (reason) => ({ state: "broken", reason, leaf });
    if (event.plan_id !== this.planId) return broken("served under another plan");
    if (event.redacted === true) {
      if (event.payload !== null) return broken("payload_not_canonical: marked redacted but shows a payload");
    } else if ((await payloadHash(event.payload)) !== event.payload_hash) {
      return broken("payload_hash: the payload is not the one its hash commits to");
    }
    if (event.seq === 1 ? event.prev_hash !== null : bySeq.has(event.seq - 1) && bySeq.get(event.seq - 1).signature !== event.prev_hash) {
      return broken(`prev_hash: does not link to seq ${event.seq - 1}`);
    }
    // And the newer one shown, if it was checked first (a page of older
    // events loaded after it): the link is checked once both are on screen.
    if (bySeq.has(event.seq + 1) && bySeq.get(event.seq + 1).prev_hash !== event.signature) {
      return broken(`prev_hash: seq ${event.seq + 1} does not link to this event`);
    }
    let proof;
    try {
      proof = await getJson(`/api/plans/${this.planId}/events/${event.seq}/inclusion?tree_size=${size}`);
    } catch (e) {
      // Out of reach, failing or busy is not a break (docs/viewer.md): the
      // event stays pending and is checked again with the next checkpoint.
      // So is a plan deleted meanwhile (410): no proof of it is served any more.
      if (!(e instanceof ApiError) || e.status >= 500 || e.status === 429 || e.status === 410) {
        return { state: "pending", reason: `cannot check now (${e.message})`, leaf };
      }
      return broken(`no inclusion proof (${e.message})`);
    }
    const ok = await verifyInclusion(event.seq - 1, size, leaf, proof.proof.map(b64decode), root);
    if (!ok) return broken("not in the signed log: this event is not the one the checkpoint covers");
    return { state: event.redacted === true ? "redacted" : "verified", reason: null, leaf };
  }

  /** The witnessed bundle, checked (docs/verifiable-logs.md, "The bundle"). */
  async checkWitnessed() {
    const bundle = await this.fetchBundle();
    if (!bundle) return (this.witnessed = { pending: true });
    const { heads, plan, deleted } = await this.verifyBundle(bundle);
    // The witnessed tree and the current one must be one history, whichever
    // is larger: a witnessed size ahead of the checkpoint (appends since) is
    // checked the other way round, else a daemon holding the log key could
    // show a fork beside its honest, cosigned tree.
    const [current, gen] = [this.checkpoint, this.generation];
    if (!current) throw new Error("no checkpoint checked yet");
    const w = plan.checkpoint;
    const [small, large] = w.size <= current.size ? [w, current] : [current, w];
    const c = await getJson(`/api/plans/${this.planId}/consistency?from=${small.size}&to=${large.size}`);
    if (!(await verifyConsistency(small.size, large.size, c.proof.map(b64decode), small.root, large.root))) {
      // Forgotten meanwhile: `current` may be a checkpoint from before a
      // restore, which the restored history need not extend.
      if (generation() !== gen) throw new Error(FORGOTTEN_MEANWHILE);
      // Both are signed by the plan's key: a fork, for the page's life (or
      // until a Forget).
      this.markForked("the current checkpoint and the witnessed one are not one history (fork)", current, gen);
      throw new Broken(this.forked);
    }
    const { keys, quorum } = await witnessKeys();
    const cosigned = await verifyCosignatures(heads.note, keys);
    this.witnessed = {
      size: w.size, headsIndex: bundle.heads_index, headsSize: heads.checkpoint.size,
      lines: heads.note.signatures.length - 1, cosigned, pinned: keys.length, quorum, deleted,
    };
    return this.witnessed;
  }

  /**
   * The memory's generation now. Forgotten since this page last checked:
   * what it checked is from before, as the kept memory was, and is dropped.
   */
  adoptGeneration() {
    const gen = generation();
    if (gen !== null && gen !== this.generation) {
      this.generation = gen;
      this.checkpoint = null;
      this.forked = null;
      this.results = new Map();
      this.witnessed = null;
      this.redactions = null; // read from the system journal before a restore
    }
    return gen;
  }

  /**
   * For a plan the daemon says was deleted (410, so it serves no checkpoint
   * or proof of it): checks the signed record of the deletion, the bundle
   * whose heads-log entry marks the plan's final checkpoint deleted,
   * against what this browser kept of the log, and kept (a live checkpoint
   * of the log after it breaks). `{pending: true}` while no signed heads
   * checkpoint records the plan yet; `{unsigned: true}` when the daemon
   * serves no bundle of it (410); `{live: size}` when it records the
   * plan live, not deleted (the daemon's 410 is then not backed); else the
   * final size, the cosignatures, and `grew` when the final size is above
   * the one kept (that growth cannot be checked: the daemon serves no
   * proof of it, and the kept size is not raised).
   */
  async checkDeleted() {
    const gen = this.adoptGeneration();
    let outcome;
    try {
      outcome = await this.checkDeletedIn(gen);
    } catch (e) {
      // Judged against a memory forgotten meanwhile: no verdict.
      if (generation() !== gen) throw new Error(FORGOTTEN_MEANWHILE);
      throw e;
    }
    if (generation() !== gen) throw new Error(FORGOTTEN_MEANWHILE);
    return outcome;
  }

  /** `checkDeleted` against generation `gen`'s memory. */
  async checkDeletedIn(gen) {
    const bundle = await this.fetchBundle(true);
    if (!bundle) return { pending: true };
    if (bundle.unsigned) return { unsigned: true };
    const { heads, plan, planSigner, deleted, source } = await this.verifyBundle(bundle);
    this.source = source;
    const final = plan.checkpoint;
    this.keyName = planSigner.text;
    this.seenId = `${final.origin} ${this.keyName}`;
    const kept = seen(this.seenId, gen);
    // A fork proven on this page (kept or not: storage may be off), or on
    // an earlier visit, stays proven.
    if (this.forked) throw new Broken(this.forked);
    if (kept?.forked) { this.forked = kept.forked; throw new Broken(kept.forked); }
    // All signed by the plan's key. A deletion is the plan's last
    // checkpoint: one below a size this browser checked, or another
    // deletion than one it checked, is a second history. A live entry may
    // be an older heads tree's: only one beyond a checked deletion, or
    // another root at a size checked, proves anything.
    const what = deleted ? "deleted" : "recorded live in the heads log";
    const fork = (message, at) => { this.markForked(message, at, gen); return new Broken(message); };
    const sameAs = (c) => c.size === final.size && equal(c.root, final.root);
    const gone = keptDeletion(gen, this.seenId);
    if (gone && (deleted ? !sameAs(gone) : final.size >= gone.size && !sameAs(gone))) {
      throw fork(`this browser checked the plan's signed deletion at size ${gone.size}; now it is ${what} at size ${final.size} (fork)`, kept ?? final);
    }
    // What this page checked while the plan was live counts as what this
    // browser kept does (with storage off, only the page has it).
    for (const prior of [kept, this.checkpoint]) {
      if (!prior) continue;
      if (deleted && final.size < prior.size) throw fork(`deleted at size ${final.size}, below size ${prior.size} this browser checked (rollback)`, prior);
      if (final.size === prior.size && !equal(final.root, prior.root)) {
        throw fork(`two signed roots for size ${final.size}: the one checked and the one ${what} (fork)`, prior);
      }
    }
    // The daemon said 410, yet its signed heads log records the plan live:
    // its word is not backed (a deletion is always proved as itself).
    if (!deleted) return { live: final.size };
    keepDeletion(gen, this.seenId, final, kept);
    // Another tab may have kept another deletion of this log meanwhile.
    const stored = keptDeletion(gen, this.seenId);
    if (stored && !sameAs(stored)) {
      throw fork(`two signed deletions of this plan, at size ${stored.size} (kept by another tab) and ${final.size} (fork)`, kept ?? final);
    }
    const { keys, quorum } = await witnessKeys();
    const cosigned = await verifyCosignatures(heads.note, keys);
    // Growth is judged from the larger of what this browser kept and what
    // this page checked.
    const base = [kept, this.checkpoint].filter(Boolean).sort((a, b) => b.size - a.size)[0] ?? null;
    return {
      size: final.size, grew: base ? base.size < final.size : false, firstSight: !base,
      cosigned, pinned: keys.length, quorum,
    };
  }

  /**
   * The plan's witnessed bundle, or null while the heads log has no entry
   * of it (409). With `unsigned`, `{unsigned: true}` for a plan the daemon
   * holds no signed deletion of (410: deleted before it kept a heads log).
   */
  async fetchBundle(unsigned = false) {
    try {
      return await getJson(`/api/plans/${this.planId}/checkpoint?witnessed=1`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) return null;
      if (unsigned && e instanceof ApiError && e.status === 410) return { unsigned: true };
      throw e;
    }
  }

  /**
   * Checks a bundle's own proofs: the heads checkpoint and the plan
   * checkpoint signed by an instance key, the heads-log entry made from the
   * plan checkpoint, its inclusion, and that it is the plan's latest entry
   * in that tree, and which key source it was checked under. Throws
   * `Broken` on any failure.
   */
  async verifyBundle(bundle) {
    // Each note is checked against the keys the checkpoint may be signed
    // by (the pinned one, or the served current and retired ones), not only
    // the one that signed the checkpoint: the bundle is signed when asked
    // for, and the log key may have been rotated since.
    const { source, keys: instances } = await logKeys();
    const signedBy = async (what, note, keyOf) => {
      const { verified, instance, error } = await signedByOne(note, instances, keyOf);
      if (!verified) throw new Broken(`${what}: ${error?.message ?? "no log key"}`);
      return { verified, instance };
    };
    const heads = (await signedBy("heads checkpoint", bundle.heads_checkpoint, (instance) => instance)).verified;
    const { verified: plan, instance: planSigner } = await signedBy("witnessed plan checkpoint",
      bundle.plan_checkpoint, (instance) => planKey(instance, this.planId));
    const entry = [false, true].map((d) => headsEntry(this.planId, plan.checkpoint, d)).find((t) => t === bundle.heads_entry);
    if (!entry) throw new Broken("the heads-log entry is not the plan checkpoint's");
    const deleted = entry === headsEntry(this.planId, plan.checkpoint, true);
    const leaf = await sha256(concat(Uint8Array.of(0), new TextEncoder().encode(entry)));
    const included = await verifyInclusion(bundle.heads_index, heads.checkpoint.size, leaf,
      bundle.inclusion_proof.map(b64decode), heads.checkpoint.root);
    if (!included) throw new Broken("the heads-log inclusion proof does not verify");
    // The entry must be the plan's latest in that tree: every entry after it
    // comes with the bundle, none may record this plan, and with the path's
    // left side they must rebuild the signed root (none left out). Else an
    // old entry inside a freshly cosigned tree would pass as witnessed.
    const later = bundle.later_entries;
    if (!Array.isArray(later) || later.length !== heads.checkpoint.size - bundle.heads_index - 1) {
      throw new Broken("the bundle does not carry every heads-log entry after the plan's");
    }
    const laterLeaves = [];
    for (const [i, text] of later.entries()) {
      const plan = typeof text === "string" ? headsEntryPlan(text) : null;
      if (plan === null) throw new Broken(`heads-log entry ${bundle.heads_index + 1 + i} is not an entry`);
      if (plan === this.planId) {
        throw new Broken(`the heads log records this plan again at entry ${bundle.heads_index + 1 + i}: the witnessed checkpoint shown is not its latest`);
      }
      laterLeaves.push(await leafHash(new TextEncoder().encode(text)));
    }
    const rebuilt = await rootFromLeaf(bundle.heads_index, bundle.inclusion_proof.map(b64decode), [leaf, ...laterLeaves]);
    if (!rebuilt || !equal(rebuilt, heads.checkpoint.root)) {
      throw new Broken("the heads-log entries after the plan's are not the witnessed tree's");
    }
    return { heads, plan, planSigner, deleted, source };
  }

  /** The system journal's record of a redaction, or null when there is none. */
  async redaction(seq) {
    // A failed load (the system journal out of reach) is tried again next time.
    if (!this.redactions) this.redactions = this.loadRedactions().catch((e) => { this.redactions = null; throw e; });
    const map = await this.redactions;
    return map.records.get(seq) || (map.complete ? null : undefined);
  }

  async loadRedactions() {
    const records = new Map();
    let head;
    try {
      head = (await getJson(`/api/plans/${SYSTEM_PLAN}`)).head_seq;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return { records, complete: true };
      throw e;
    }
    // A record counts only if the system journal's own signed log holds it:
    // otherwise anyone able to write rows (or the daemon) could give any
    // erasure a reason. Its checkpoint is taken first, so it covers them all.
    const system = new PlanChecker(SYSTEM_PLAN);
    await system.refreshCheckpoint();
    let uncovered = false;
    const start = Math.max(0, head - SYSTEM_SCAN);
    for (let after = start; after < head;) {
      const page = await getJson(`/api/plans/${SYSTEM_PLAN}/events?after=${after}&limit=1000`);
      for (const e of page.events) {
        const p = e.payload;
        if (e.type === "system.event_redacted" && p && p.plan_id === this.planId && Number.isSafeInteger(p.seq)) {
          if (!(e.seq <= system.checkpoint.size)) { uncovered = true; continue; }
          const checked = await system.checkEvent(e, new Map()).catch(() => ({ state: "broken" }));
          if (checked.state === "verified") records.set(p.seq, { reason: p.reason, by: p.by, at: e.created_at, seq: e.seq });
          else if (checked.state === "pending") uncovered = true; // its proof cannot be fetched now: not "no record"
        }
      }
      if (page.next_after <= after) break;
      after = page.next_after;
    }
    return { records, complete: start === 0 && !uncovered };
  }
}

/** The note verified by the first instance key whose `keyOf` key signed it, or the last error. */
async function signedByOne(note, instances, keyOf) {
  let error = null;
  for (const instance of instances) {
    try { return { verified: await verifyCheckpoint(note, await keyOf(instance)), instance }; } catch (e) { error = e; }
  }
  return { verified: null, instance: null, error };
}

function noteText(note) {
  return parseNote(note).text;
}
