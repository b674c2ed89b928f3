// What the page checks itself, with WebCrypto only: leaf hashes (RFC 9162
// over the JCS entry of docs/verifiable-logs.md), inclusion and
// consistency proofs, C2SP signed notes with Ed25519 log keys, and
// cosignature/v1 lines of witnesses. Nothing here trusts the daemon.

import { canonicalBytes, canonicalize } from "./jcs.js";

const enc = new TextEncoder();

/** Whether this browser can check anything (WebCrypto needs a secure context). */
export function cryptoAvailable() {
  return Boolean(globalThis.isSecureContext && globalThis.crypto && crypto.subtle);
}

export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function b64decode(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) {
    throw new Error("not standard base64");
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

export function b64encode(bytes) {
  return btoa(String.fromCharCode(...bytes));
}

export function equal(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// ---- events and leaves ----------------------------------------------------

/** payload_hash as the daemon computes it: SHA-256 of JCS(payload). */
export async function payloadHash(payload) {
  return hex(await sha256(canonicalBytes(payload)));
}

/** The entry bytes: JCS of the signed object plus the signature. */
export function entryBytes(event) {
  return canonicalBytes({
    v: 1, plan_id: event.plan_id, seq: event.seq, id: event.id, type: event.type,
    actor: event.actor, created_at: event.created_at, payload_hash: event.payload_hash,
    prev_hash: event.prev_hash, key_id: event.key_id, signature: event.signature,
  });
}

export async function leafHash(entry) {
  return sha256(concat(Uint8Array.of(0), entry));
}

async function node(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

const odd = (n) => n % 2 === 1;
const half = (n) => Math.floor(n / 2);
/** A SHA-256 value: every hash of a proof or a root is 32 bytes (RFC 9162). */
const isHash = (h) => h instanceof Uint8Array && h.length === 32;

/** RFC 9162 §2.1.3.2: does `leaf` at `index` rebuild `root` of `size` leaves? */
export async function verifyInclusion(index, size, leaf, proof, root) {
  // Whole numbers only: -1 or "0" would walk the path of leaf 0.
  if (![index, size].every(Number.isSafeInteger) || index < 0 || index >= size) return false;
  if (![leaf, root, ...proof].every(isHash)) return false;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      r = await node(p, r);
      if (!odd(fn)) while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); }
    } else {
      r = await node(r, p);
    }
    fn = half(fn); sn = half(sn);
  }
  return sn === 0 && equal(r, root);
}

/**
 * The root of the tree of `index + leaves.length` leaves whose leaves from
 * `index` on are `leaves`, the ones before it summed up by the left
 * siblings on leaf `index`'s inclusion path (the walk of RFC 9162
 * §2.1.3.2; the right siblings are not used). Equal to a signed root, it
 * proves that `leaves` are all of that tree's leaves from `index` on: one
 * left out or added changes it. Null if the path cannot be one of leaf
 * `index` in that tree.
 */
export async function rootFromLeaf(index, proof, leaves) {
  const size = index + leaves.length;
  if (!Number.isSafeInteger(index) || index < 0 || leaves.length === 0 || !Number.isSafeInteger(size)) return null;
  if (![...leaves, ...proof].every(isHash)) return null;
  let fn = index, sn = size - 1, level = 0;
  const left = [];
  for (const p of proof) {
    if (sn === 0) return null;
    if (odd(fn) || fn === sn) {
      while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); level += 1; }
      if (fn === 0) return null;
      left.push({ level, hash: p });
    }
    fn = half(fn); sn = half(sn); level += 1;
  }
  if (sn !== 0) return null;
  left.reverse();
  // One perfect subtree per bit of `index`, the largest first.
  if (left.reduce((sum, l) => sum + 2 ** l.level, 0) !== index) return null;
  if (left.some((l, i) => i > 0 && left[i - 1].level <= l.level)) return null;
  const stack = left;
  for (const leaf of leaves) {
    let hash = leaf, level = 0;
    while (stack.length > 0 && stack[stack.length - 1].level === level) {
      hash = await node(stack.pop().hash, hash);
      level += 1;
    }
    stack.push({ level, hash });
  }
  let root = stack.pop().hash;
  while (stack.length > 0) root = await node(stack.pop().hash, root);
  return root;
}

/** RFC 9162 §2.1.4.2: is the tree (first, firstRoot) a prefix of (second, secondRoot)? */
export async function verifyConsistency(first, second, proof, firstRoot, secondRoot) {
  if (![first, second].every(Number.isSafeInteger) || first < 0 || first > second) return false;
  if (![firstRoot, secondRoot, ...proof].every(isHash)) return false;
  if (first === second) return proof.length === 0 && equal(firstRoot, secondRoot);
  if (first === 0) return proof.length === 0;
  if (proof.length === 0) return false;
  // A first tree of 2^k leaves is a complete subtree: its root starts the path.
  const path = 2 ** Math.round(Math.log2(first)) === first ? [firstRoot, ...proof] : proof;
  let fn = first - 1, sn = second - 1;
  while (odd(fn)) { fn = half(fn); sn = half(sn); }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) return false;
    if (odd(fn) || fn === sn) {
      fr = await node(c, fr); sr = await node(c, sr);
      if (!odd(fn)) while (!odd(fn) && fn !== 0) { fn = half(fn); sn = half(sn); }
    } else {
      sr = await node(sr, c);
    }
    fn = half(fn); sn = half(sn);
  }
  return sn === 0 && equal(fr, firstRoot) && equal(sr, secondRoot);
}

// ---- keys, notes, checkpoints ---------------------------------------------

/** A C2SP vkey `<name>+<hex id>+<base64(type || key)>`, checked. */
export async function parseVkey(text, type = 0x01) {
  // The base64 key may hold '+' itself: split at the first two only.
  const m = /^([^+\s]+)\+([0-9a-f]{8})\+(\S+)$/.exec(String(text).trim());
  const parts = m ? m.slice(1) : [];
  if (!m) {
    throw new Error("not a verifier key (name+id+key)");
  }
  const raw = b64decode(parts[2]);
  if (raw.length !== 33 || raw[0] !== type) throw new Error(`not a type 0x0${type} Ed25519 key`);
  const key = raw.slice(1);
  const id = await keyId(parts[0], type, key);
  if (hex(id) !== parts[1]) throw new Error("the key id does not match the name and key");
  return { name: parts[0], id, key, type, text: String(text).trim() };
}

async function keyId(name, type, key) {
  return (await sha256(concat(enc.encode(name + "\n"), Uint8Array.of(type), key))).slice(0, 4);
}

/** The key of a plan's log: the instance key under `{name}/{plan_id}`. */
export async function planKey(instance, planId) {
  const name = `${instance.name}/${planId}`;
  return { ...instance, name, id: await keyId(name, instance.type, instance.key), text: null };
}

/** Splits a signed note into its text and signature lines. */
export function parseNote(note) {
  const at = note.indexOf("\n\n");
  if (at < 0 || !note.endsWith("\n")) throw new Error("not a signed note");
  const text = note.slice(0, at + 1);
  const signatures = note.slice(at + 2, -1).split("\n").map((line) => {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new Error("a malformed signature line");
    return { name: m[1], raw: b64decode(m[2]) };
  });
  return { text, signatures };
}

/** A tlog-checkpoint's origin, size and root. */
export function parseCheckpoint(text) {
  const lines = text.split("\n");
  if (lines.length < 4 || !/^[0-9]+$/.test(lines[1])) throw new Error("not a checkpoint");
  const size = Number(lines[1]);
  if (!Number.isSafeInteger(size)) throw new Error("checkpoint size out of range");
  const root = b64decode(lines[2]);
  if (root.length !== 32) throw new Error("checkpoint root is not 32 bytes");
  return { origin: lines[0], size, root };
}

async function ed25519(key, signature, message) {
  const k = await crypto.subtle.importKey("raw", key, { name: "Ed25519" }, false, ["verify"]);
  return crypto.subtle.verify({ name: "Ed25519" }, k, signature, message);
}

/**
 * Checks a signed checkpoint note with one log key (type 0x01): a
 * signature line with the key's name and id must verify, and the origin
 * must be the key's name. Returns the parsed checkpoint and the note.
 */
export async function verifyCheckpoint(noteText, key) {
  const note = parseNote(noteText);
  const checkpoint = parseCheckpoint(note.text);
  if (checkpoint.origin !== key.name) throw new Error(`origin ${checkpoint.origin} is not ${key.name}`);
  const message = enc.encode(note.text);
  for (const sig of note.signatures) {
    if (sig.name !== key.name || sig.raw.length !== 68 || !equal(sig.raw.slice(0, 4), key.id)) continue;
    if (await ed25519(key.key, sig.raw.slice(4), message)) return { checkpoint, note };
    throw new Error("the checkpoint's signature does not verify");
  }
  throw new Error("no signature by this key on the checkpoint");
}

/** The witness keys (cosignature/v1, type 0x04) with a valid line on the note. */
export async function verifyCosignatures(note, witnesses) {
  const found = [];
  // One key is one witness, however often or under whichever names it was
  // pinned: a cosignature does not cover the name, so it would count again.
  const counted = new Set();
  for (const w of witnesses) {
    if (counted.has(hex(w.key))) continue;
    for (const sig of note.signatures) {
      if (sig.name !== w.name || sig.raw.length !== 76 || !equal(sig.raw.slice(0, 4), w.id)) continue;
      const view = new DataView(sig.raw.buffer, sig.raw.byteOffset + 4, 8);
      const time = view.getBigUint64(0);
      const message = enc.encode(`cosignature/v1\ntime ${time}\n${note.text}`);
      if (await ed25519(w.key, sig.raw.slice(12), message)) {
        found.push({ name: w.name, time: Number(time) });
        counted.add(hex(w.key));
        break;
      }
    }
  }
  return found;
}

/**
 * The plan a heads-log entry records, if `text` is exactly the entry of
 * what it says (canonical, a lowercase plan id, a 32-byte root); else null.
 */
export function headsEntryPlan(text) {
  let e;
  try { e = JSON.parse(text); } catch { return null; }
  if (!e || typeof e !== "object" || Array.isArray(e)) return null;
  if (typeof e.plan_id !== "string" || !/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(e.plan_id)) return null;
  if (!Number.isSafeInteger(e.size) || e.size < 0 || typeof e.root !== "string") return null;
  let root;
  try { root = b64decode(e.root); } catch { return null; }
  if (root.length !== 32) return null;
  const again = headsEntry(e.plan_id, { size: e.size, root }, e.deleted === true);
  return again === text ? e.plan_id : null;
}

/** The heads-log entry a plan checkpoint makes (docs/verifiable-logs.md). */
export function headsEntry(planId, checkpoint, deleted) {
  const entry = { plan_id: planId, root: b64encode(checkpoint.root), size: checkpoint.size };
  if (deleted) entry.deleted = true;
  return canonicalize(entry);
}
