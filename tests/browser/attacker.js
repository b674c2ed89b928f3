// The attacker's tools for the viewer's hostile tests (prepended to
// hostile.js and hostile-page.js): Ed25519 keys made in the browser, C2SP
// signed notes and cosignatures, RFC 9162 trees with their inclusion and
// consistency proofs, events as the daemon serves them, and `fetch`
// replaced by a daemon that answers from `world.routes`.
async function attacker() {
  const v = await import("/ui/assets/verify.js");
  const enc = new TextEncoder();
  // ---- the attacker's tools: keys, notes, trees ------------------------------
  const PLAN = "5f0c6f0e-8a51-4c53-9d2e-0b8c6a1f7e21";
  const SYSTEM = "00000000-0000-0000-0000-000000000000";
  const keyId = async (name, type, pub) => (await v.sha256(v.concat(enc.encode(name + "\n"), Uint8Array.of(type), pub))).slice(0, 4);
  const newKey = async (name, type) => {
    const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
    const pub = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
    const id = await keyId(name, type, pub);
    return { name, type, pub, id, priv: pair.privateKey, vkey: `${name}+${v.hex(id)}+${v.b64encode(v.concat(Uint8Array.of(type), pub))}` };
  };
  const sign = async (key, bytes) => new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.priv, bytes));
  const as = async (key, name) => ({ ...key, name, id: await keyId(name, key.type, key.pub) });
  const checkpointText = (origin, size, root) => `${origin}\n${size}\n${v.b64encode(root)}\n`;
  const signatureLine = async (key, text) => `\u2014 ${key.name} ${v.b64encode(v.concat(key.id, await sign(key, enc.encode(text))))}\n`;
  const cosignatureLine = async (w, text, time = BigInt(Math.floor(Date.now() / 1000))) => {
    const t = new Uint8Array(8);
    new DataView(t.buffer).setBigUint64(0, time);
    const sig = await sign(w, enc.encode(`cosignature/v1\ntime ${time}\n${text}`));
    return `\u2014 ${w.name} ${v.b64encode(v.concat(w.id, t, sig))}\n`;
  };
  const note = async (text, ...lines) => `${text}\n${(await Promise.all(lines)).join("")}`;

  const node = (l, r) => v.sha256(v.concat(Uint8Array.of(1), l, r));
  const split = (n) => { let k = 1; while (k * 2 < n) k *= 2; return k; };
  const mth = async (hs) => {
    if (hs.length === 0) return v.sha256(new Uint8Array());
    if (hs.length === 1) return hs[0];
    const k = split(hs.length);
    return node(await mth(hs.slice(0, k)), await mth(hs.slice(k)));
  };
  const inclusion = async (m, hs) => {
    if (hs.length <= 1) return [];
    const k = split(hs.length);
    return m < k ? [...await inclusion(m, hs.slice(0, k)), await mth(hs.slice(k))]
      : [...await inclusion(m - k, hs.slice(k)), await mth(hs.slice(0, k))];
  };
  const subproof = async (m, hs, b) => {
    if (m === hs.length) return b ? [] : [await mth(hs)];
    const k = split(hs.length);
    return m <= k ? [...await subproof(m, hs.slice(0, k), b), await mth(hs.slice(k))]
      : [...await subproof(m - k, hs.slice(k), false), await mth(hs.slice(0, k))];
  };
  const consistency = (m, hs) => (m === 0 || m === hs.length ? [] : subproof(m, hs, true));
  const leafOf = (bytes) => v.sha256(v.concat(Uint8Array.of(0), bytes));
  const junk = (i) => v.sha256(enc.encode(`junk ${i}`));

  /** A chain of events of `plan`, as the daemon serves them, and their leaves. */
  const events = async (plan, payloads) => {
    const list = [];
    for (const [i, payload] of payloads.entries()) {
      const e = {
        plan_id: plan, seq: i + 1, id: `0190aaaa-0000-7000-8000-00000000000${i}`, type: "step.completed",
        actor: "tester", created_at: `2026-12-01T10:00:0${i}.000Z`, payload, payload_hash: await v.payloadHash(payload),
        prev_hash: i ? list[i - 1].signature : null, key_id: "k1", signature: `hmac-${plan}-${i + 1}`, redacted: false,
      };
      list.push(e);
    }
    return { list, leaves: await Promise.all(list.map((e) => v.leafHash(v.entryBytes(e)))) };
  };

  // ---- the lying daemon: fetch answers from `routes` ---------------------------
  const world = { routes: {} };
  const answer = (body, status = 200) => new Response(typeof body === "string" ? body : JSON.stringify(body),
    { status, headers: { "content-type": typeof body === "string" ? "text/plain" : "application/json" } });
  window.fetch = async (input) => {
    const url = new URL(input, location.origin);
    const route = world.routes[url.pathname + url.search] ?? world.routes[url.pathname];
    if (!route) return answer({ title: `no route ${url.pathname}${url.search}` }, 404);
    // A route may answer a Response itself (any status), or throw (a network error).
    const body = await route(url);
    return body instanceof Response ? body : answer(body);
  };
  const b64s = (hs) => hs.map(v.b64encode);
  /** Routes for a plan log whose current tree is `tree()` (consistency and inclusion from it). */
  const planRoutes = (plan, tree, checkpoint) => ({
    [`/api/plans/${plan}/checkpoint`]: () => checkpoint(),
    [`/api/plans/${plan}/consistency`]: async (u) => ({ proof: b64s(await consistency(Number(u.searchParams.get("from")), tree().slice(0, Number(u.searchParams.get("to"))))) }),
    ...Object.fromEntries(tree().map((_, i) => [`/api/plans/${plan}/events/${i + 1}/inclusion`,
      async (u) => ({ proof: b64s(await inclusion(i, tree().slice(0, Number(u.searchParams.get("tree_size"))))) })])),
  });

  const log = await newKey("logbook/hostile.test", 0x01);
  const witness = await newKey("witness.test/w1", 0x04);
  const planKey = await as(log, `${log.name}/${PLAN}`);
  const systemKey = await as(log, `${log.name}/${SYSTEM}`);
  const pinAll = (witnesses = [witness.vkey], quorum = 1) =>
    localStorage.setItem("logbook.pins", JSON.stringify({ log: log.vkey, witnesses, quorum }));
  const planNote = async (hs, key = planKey) => note(checkpointText(key.name, hs.length, await mth(hs)), signatureLine(key, checkpointText(key.name, hs.length, await mth(hs))));

  /** A witnessed bundle for plan tree `hs`, the heads log holding that one entry (the plan marked deleted if `deleted`), cosigned by `cosigners` at `time` (Unix seconds; now by default), signed by `instance`. */
  const bundle = async (hs, cosigners = [witness], plan = PLAN, deleted = false, instance = log, time = undefined) => {
    const planCp = await planNote(hs, await as(instance, `${instance.name}/${plan}`));
    const entry = v.headsEntry(plan, v.parseCheckpoint(v.parseNote(planCp).text), deleted);
    const headsLeaves = [await junk(100), await leafOf(enc.encode(entry))];
    const headsText = checkpointText(log.name, 2, await mth(headsLeaves));
    const heads = await note(headsText, signatureLine(instance, headsText), ...cosigners.map((w) => cosignatureLine(w, headsText, time)));
    return { heads_checkpoint: heads, plan_checkpoint: planCp, heads_entry: entry, heads_index: 1, inclusion_proof: b64s(await inclusion(1, headsLeaves)), later_entries: [] };
  };

  return { world, v, enc, PLAN, SYSTEM, keyId, newKey, sign, as, checkpointText, signatureLine, cosignatureLine, note, node, mth, inclusion, consistency, leafOf, junk, events, answer, b64s, planRoutes, log, witness, planKey, systemKey, pinAll, planNote, bundle };
}
