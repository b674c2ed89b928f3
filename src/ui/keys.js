// Which keys the page verifies with. A key the reader pinned (pasted from
// a source they trust, kept in localStorage) can convict this daemon; a
// key this daemon serves can only show that the page matches what the
// daemon itself signed. The page always says which of the two it used.

import { getJson } from "./api.js";
import { equal, parseVkey } from "./verify.js";

const PINS = "logbook.pins";

/** {log: "vkey" | "", witnesses: ["vkey"], quorum: n} */
export function pins() {
  try {
    const p = JSON.parse(localStorage.getItem(PINS) || "{}");
    return {
      log: typeof p.log === "string" ? p.log : "",
      witnesses: Array.isArray(p.witnesses) ? p.witnesses.filter((w) => typeof w === "string") : [],
      // A quorum of 0 would make pinned witnesses count for nothing while
      // the page shows their check: pinning none is how to need none.
      quorum: Number.isSafeInteger(p.quorum) && p.quorum >= 1 && p.quorum <= 32 ? p.quorum : 1,
    };
  } catch {
    return { log: "", witnesses: [], quorum: 1 };
  }
}

/** Checks and stores pins; throws with the reason when a key is malformed. */
export async function savePins(log, witnesses, quorum) {
  if (log.trim()) await parseVkey(log, 0x01);
  const list = witnesses.split("\n").map((w) => w.trim()).filter(Boolean);
  for (const w of list) await parseVkey(w, 0x04);
  const q = Number(quorum);
  if (!Number.isSafeInteger(q) || q < 1 || q > 32) throw new Error("quorum must be 1 to 32");
  localStorage.setItem(PINS, JSON.stringify({ log: log.trim(), witnesses: list, quorum: q }));
}

/**
 * The instance log keys to try: the pinned one alone, or else every key
 * the daemon serves (current and retired). `source` is "pinned" or "served".
 */
export async function logKeys() {
  const pinned = pins().log;
  if (pinned) return { source: "pinned", keys: [await parseVkey(pinned, 0x01)] };
  const served = await getJson("/api/v1/log/keys");
  const texts = [served.current?.vkey, ...(served.retired || []).map((r) => r.vkey)].filter(Boolean);
  const keys = [];
  for (const t of texts) keys.push(await parseVkey(t, 0x01));
  return { source: "served", keys };
}

/** The pinned witness keys (cosignature/v1) and the quorum. */
export async function witnessKeys() {
  const p = pins();
  const keys = [];
  for (const w of p.witnesses) {
    const k = await parseVkey(w, 0x04);
    // The same key pinned twice is one witness (verifyCosignatures counts it once).
    if (!keys.some((x) => equal(x.key, k.key))) keys.push(k);
  }
  return { keys, quorum: p.quorum };
}
