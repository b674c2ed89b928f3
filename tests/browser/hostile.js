// Runs in the page (WebDriver executeAsyncScript): the viewer's own
// modules against a daemon that lies. `fetch` is replaced by the attacker:
// it answers every API path with bodies the test builds (signed notes,
// proofs, events), holding the log key where a case says so (a daemon that
// signs a fork) and not otherwise. The page's modules are the real ones;
// only the network answers are hostile. Returns the failed expectations.
const done = arguments[arguments.length - 1];
(async () => {
  const v = await import("/ui/assets/verify.js");
  const { PlanChecker, Broken } = await import("/ui/assets/check.js");
  const enc = new TextEncoder();
  const fails = [];
  const check = (ok, what) => { if (!ok) fails.push(what); };
  const refuses = async (what, f) => {
    try { await f(); fails.push(`${what}: accepted`); } catch (e) {
      if (!(e instanceof Broken) && !/not a|out of range|32 bytes|malformed|base64/.test(e.message)) fails.push(`${what}: ${e.message}`);
    }
  };

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
  const cosignatureLine = async (w, text, time = 1700000000n) => {
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
  let routes = {};
  const answer = (body, status = 200) => new Response(typeof body === "string" ? body : JSON.stringify(body),
    { status, headers: { "content-type": typeof body === "string" ? "text/plain" : "application/json" } });
  window.fetch = async (input) => {
    const url = new URL(input, location.origin);
    const route = routes[url.pathname + url.search] ?? routes[url.pathname];
    if (!route) return answer({ title: `no route ${url.pathname}${url.search}` }, 404);
    return answer(await route(url));
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
  pinAll();
  const planNote = async (hs, key = planKey) => note(checkpointText(key.name, hs.length, await mth(hs)), signatureLine(key, checkpointText(key.name, hs.length, await mth(hs))));

  /** A witnessed bundle for plan tree `hs`, the heads log holding that one entry, cosigned by `cosigners`. */
  const bundle = async (hs, cosigners = [witness], plan = PLAN) => {
    const planCp = await planNote(hs, await as(log, `${log.name}/${plan}`));
    const entry = v.headsEntry(plan, v.parseCheckpoint(v.parseNote(planCp).text), false);
    const headsLeaves = [await junk(100), await leafOf(enc.encode(entry))];
    const headsText = checkpointText(log.name, 2, await mth(headsLeaves));
    const heads = await note(headsText, signatureLine(log, headsText), ...cosigners.map((w) => cosignatureLine(w, headsText)));
    return { heads_checkpoint: heads, plan_checkpoint: planCp, heads_entry: entry, heads_index: 1, inclusion_proof: b64s(await inclusion(1, headsLeaves)) };
  };

  // 1. A witnessed size ahead of the current checkpoint must still be bound
  //    to it: a daemon holding the log key shows this reader a fork F of
  //    size 2 while the witnesses cosigned the honest tree H of size 3.
  {
    const honest = [await junk(1), await junk(2), await junk(3)];
    const fork = [await junk(1), await junk(9)];
    const witnessed = await bundle(honest);
    routes = { ...planRoutes(PLAN, () => honest, () => planNote(fork)),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => witnessed };
    const c = new PlanChecker(PLAN);
    await c.refreshCheckpoint();
    await refuses("a fork behind a witnessed size ahead of it shown as witnessed", () => c.checkWitnessed());
    // The honest race: the current checkpoint is a prefix of the witnessed one.
    routes = { ...planRoutes(PLAN, () => honest, () => planNote(honest.slice(0, 2))),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => witnessed };
    const h = new PlanChecker(PLAN);
    await h.refreshCheckpoint();
    const w = await h.checkWitnessed().catch((e) => ({ error: e.message }));
    check(w.size === 3 && w.cosigned?.length === 1, `an honest witnessed size ahead of the checkpoint: ${JSON.stringify(w)}`);
  }

  // 2. Rollback and fork of the plan checkpoint, and that a fork once seen stays seen.
  {
    const a = [await junk(1), await junk(2), await junk(3)];
    const b = [await junk(1), await junk(2), await junk(7)];
    let served = a;
    routes = planRoutes(PLAN, () => a, () => planNote(served));
    const c = new PlanChecker(PLAN);
    await c.refreshCheckpoint();
    served = a.slice(0, 2);
    await refuses("a rollback", () => c.refreshCheckpoint());
    served = b;
    await refuses("a second root for the same size", () => c.refreshCheckpoint());
    served = [...b, await junk(4)];
    await refuses("a larger fork", () => c.refreshCheckpoint());
    served = a;
    await refuses("the old checkpoint again after a proven fork", () => c.refreshCheckpoint());
  }

  // 3. The checkpoint note itself.
  {
    const hs = [await junk(1)];
    const root = await mth(hs);
    const text = checkpointText(planKey.name, 1, root);
    const other = await newKey("logbook/hostile.test", 0x01);
    const otherPlan = await as(other, planKey.name);
    const good = await planNote(hs);
    const cases = {
      "signed by a key of the same name that is not pinned": note(text, signatureLine(otherPlan, text)),
      "signed by the instance key, not the plan key": note(text, signatureLine(log, text)),
      "an origin that is not the plan key's name": (async () => { const t = checkpointText(log.name, 1, root); return note(t, signatureLine(await as(log, log.name), t)); })(),
      "another plan's checkpoint": (async () => { const k = await as(log, `${log.name}/${SYSTEM}`); const t = checkpointText(k.name, 1, root); return note(t, signatureLine(k, t)); })(),
      "CRLF line ends": note(text.replaceAll("\n", "\r\n"), signatureLine(planKey, text.replaceAll("\n", "\r\n"))),
      "no final newline": good.slice(0, -1),
      "text changed after signing": good.replace(`\n1\n`, `\n2\n`),
      "a bad line before the good one with the same key id": note(text, `\u2014 ${planKey.name} ${v.b64encode(v.concat(planKey.id, new Uint8Array(64)))}\n`, signatureLine(planKey, text)),
      "trailing data after the signatures": good + "garbage\n",
      "no signature lines": `${text}\n`,
    };
    for (const [size, what] of [["+1", "plus"], ["01", "leading zero"], ["1e0", "exponent"], [" 1", "space"], ["9007199254740993", "beyond 2^53"], ["-1", "negative"]]) {
      const t = `${planKey.name}\n${size}\n${v.b64encode(root)}\n`;
      cases[`size ${what}`] = note(t, signatureLine(planKey, t));
    }
    for (const [what, served] of Object.entries(cases)) {
      routes = planRoutes(PLAN, () => hs, async () => served);
      const c = new PlanChecker(PLAN);
      if (what === "size leading zero") {
        // The signature covers the text; "01" is only a spelling of 1, not a lie.
        const cp = await c.refreshCheckpoint().catch((e) => ({ error: e.message }));
        check(cp.error || cp.size === 1, `size 01 read as ${cp.size}`);
        continue;
      }
      await refuses(`checkpoint: ${what}`, () => c.refreshCheckpoint());
    }
  }

  // 4. Events: every field the page shows is bound by the leaf; a malformed
  //    event is broken, and never stalls the checks of the others.
  {
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1, amount: 1250.5 }, { i: 2 }, { i: 3 }]);
    routes = planRoutes(PLAN, () => leaves, () => planNote(leaves));
    const c = new PlanChecker(PLAN);
    await c.refreshCheckpoint();
    const state = async (e, shown = new Map()) => (await c.checkEvent(e, shown)).state;
    check((await state(list[1])) === "verified", "an honest event verifies");
    const altered = {
      type: "step.failed", actor: "mallory", created_at: "2026-12-01T10:00:09.000Z", id: "0190aaaa-0000-7000-8000-000000000009",
      seq: 3, key_id: "k2", signature: "hmac-other", prev_hash: list[2].signature, payload_hash: list[2].payload_hash,
      payload: { i: 1, amount: 1250.51 }, plan_id: SYSTEM,
    };
    for (const [field, value] of Object.entries(altered)) {
      check((await state({ ...list[1], [field]: value })) === "broken", `event with another ${field} shown as not broken`);
    }
    check((await state({ ...list[1], redacted: true, payload: null })) === "redacted", "an erased payload is redacted");
    check((await state({ ...list[1], redacted: true, payload: list[1].payload })) === "broken", "redacted with a payload");
    check((await state({ ...list[1], payload: JSON.parse('{"i": 1, "amount": 1250.5, "amount": 9}') })) === "broken", "a duplicate key whose last value differs");
    check((await state({ ...list[1], payload: JSON.parse('{"i": 1, "amount": 9, "amount": 1250.5}') })) === "verified", "a duplicate key whose last value is the hashed one");
    // The text shown for a payload is the text that was hashed (both come from the one parsed value).
    const dup = JSON.parse('{"amount": 9, "i": 1, "amount": 1250.5}');
    check(JSON.stringify(dup) === '{"amount":1250.5,"i":1}' && (await v.payloadHash(dup)) === list[1].payload_hash, "a duplicate key: shown and hashed differ");
    // Not well-formed: a number JSON.parse makes Infinity, a missing field, a
    // proof that is not base64. Each is broken; the others are still checked.
    routes[`/api/plans/${PLAN}/events/3/inclusion`] = () => ({ proof: ["not base64!"] });
    const shown = [
      { ...list[0], payload: JSON.parse('{"i": 1e400}') },
      list[1],
      list[2],
      (({ actor, ...rest }) => rest)(list[3]),
    ];
    let threw = null;
    await c.checkEvents(shown, new Map(shown.map((e) => [e.seq, e]))).catch((e) => { threw = e.message; });
    check(threw === null, `one malformed event stops the checks of the others (${threw})`);
    const states = [1, 2, 3, 4].map((s) => c.results.get(s)?.state);
    check(JSON.stringify(states) === JSON.stringify(["broken", "verified", "broken", "broken"]), `malformed events: ${JSON.stringify(states)}`);
  }

  // 5. Proofs.
  {
    const hs = await Promise.all([1, 2, 3, 4, 5].map(junk));
    const root = await mth(hs);
    const p = await inclusion(0, hs);
    check(await v.verifyInclusion(0, 5, hs[0], p, root), "an honest inclusion proof");
    check(!(await v.verifyInclusion(-1, 5, hs[0], p, root)), "inclusion at index -1 accepted");
    check(!(await v.verifyInclusion(0.5, 5, hs[0], p, root)), "inclusion at index 0.5 accepted");
    check(!(await v.verifyInclusion("0", 5, hs[0], p, root)), "inclusion at index \"0\" accepted");
    check(!(await v.verifyInclusion(5, 5, hs[4], await inclusion(4, hs), root)), "inclusion at index = size accepted");
    check(!(await v.verifyInclusion(0, 5, hs[0], [...p, hs[1]], root)), "an extra proof hash accepted");
    check(!(await v.verifyInclusion(0, 5, hs[0], p.slice(1), root)), "a missing proof hash accepted");
    check(!(await v.verifyInclusion(1, 5, hs[0], p, root)), "a leaf at the wrong index accepted");
    check(await v.verifyInclusion(0, 1, hs[0], [], hs[0]), "size 1 inclusion");
    check(!(await v.verifyInclusion(0, 0, hs[0], [], hs[0])), "size 0 inclusion accepted");
    const c23 = await consistency(3, hs);
    check(await v.verifyConsistency(3, 5, c23, await mth(hs.slice(0, 3)), root), "an honest consistency proof");
    check(!(await v.verifyConsistency(3, 5, [...c23, hs[0]], await mth(hs.slice(0, 3)), root)), "consistency with an extra hash accepted");
    check(!(await v.verifyConsistency(5, 3, c23, root, await mth(hs.slice(0, 3)))), "consistency from a larger size accepted");
    check(!(await v.verifyConsistency(3, 5, c23, await junk(0), root)), "consistency from another root accepted");
    check(!(await v.verifyConsistency(-1, 5, [], await junk(0), root)), "consistency from size -1 accepted");
    check(!(await v.verifyConsistency(2.5, 5, c23, await mth(hs.slice(0, 3)), root)), "consistency from size 2.5 accepted");
  }

  // 6. Witness bundles.
  {
    const hs = [await junk(1), await junk(2)];
    routes = planRoutes(PLAN, () => hs, () => planNote(hs));
    const run = async (b) => {
      routes[`/api/plans/${PLAN}/checkpoint?witnessed=1`] = () => b;
      const c = new PlanChecker(PLAN);
      await c.refreshCheckpoint();
      return c.checkWitnessed();
    };
    const honest = await run(await bundle(hs));
    check(honest.cosigned.length === 1 && honest.size === 2, `an honest bundle: ${JSON.stringify(honest)}`);
    const stranger = await newKey("witness.test/w1", 0x04);
    const unpinned = await run(await bundle(hs, [stranger]));
    check(unpinned.cosigned.length === 0, "a cosignature by an unpinned key of the pinned witness's name counted");
    const twice = await bundle(hs);
    const line = twice.heads_checkpoint.split("\n").find((l) => l.startsWith(`\u2014 ${witness.name}`));
    twice.heads_checkpoint += `${line}\n`;
    check((await run(twice)).cosigned.length === 1, "one witness counted twice");
    // The same witness key pinned twice (or under a second name) is one witness.
    const alias = await as(witness, "witness.test/alias");
    pinAll([witness.vkey, witness.vkey, alias.vkey], 2);
    const aliased = await run(await bundle(hs, [witness, alias]));
    check(aliased.cosigned.length === 1, `one witness key counted ${aliased.cosigned.length} times under duplicate pins`);
    pinAll();
    await refuses("a bundle for another plan", async () => run(await bundle(hs, [witness], SYSTEM)));
    const fork = [await junk(1), await junk(5)];
    await refuses("a witnessed fork of the same size", async () => run(await bundle(fork)));
    const older = [await junk(7)];
    await refuses("a witnessed tree the current one does not extend", async () => run(await bundle(older)));
    const wrongEntry = await bundle(hs);
    wrongEntry.heads_entry = wrongEntry.heads_entry.replace('"size":2', '"size":3');
    await refuses("a heads entry that is not the plan checkpoint's", () => run(wrongEntry));
    const other = await bundle(hs);
    const cosignedOther = (await bundle([await junk(8)])).heads_checkpoint;
    other.heads_checkpoint = other.heads_checkpoint.split("\n\n")[0] + "\n\n" + cosignedOther.split("\n\n")[1];
    await refuses("signature lines of another heads checkpoint", () => run(other));
  }

  // 7. Redaction records come from the system journal: one the system log
  //    does not hold is not a record.
  {
    const { list, leaves } = await events(PLAN, [{ i: 0 }]);
    const erased = { ...list[0], payload: null, redacted: true };
    const record = (await events(SYSTEM, [{ plan_id: PLAN, seq: 1, reason: "forged reason", by: "nobody" }])).list[0];
    record.type = "system.event_redacted";
    record.payload_hash = await v.payloadHash(record.payload);
    const recordLeaf = await v.leafHash(v.entryBytes(record));
    const serve = (systemLeaves) => {
      routes = {
        ...planRoutes(PLAN, () => leaves, () => planNote(leaves)),
        ...planRoutes(SYSTEM, () => systemLeaves, () => planNote(systemLeaves, systemKey)),
        [`/api/plans/${SYSTEM}`]: () => ({ plan_id: SYSTEM, head_seq: 1, count: 1 }),
        [`/api/plans/${SYSTEM}/events`]: () => ({ events: [record], next_after: 1 }),
      };
    };
    for (const [what, systemLeaves, want] of [["not in the system log", [await junk(1)], null], ["in the system log", [recordLeaf], "forged reason"]]) {
      serve(systemLeaves);
      const c = new PlanChecker(PLAN);
      await c.refreshCheckpoint();
      await c.checkEvents([erased], new Map());
      const r = await c.redaction(1).catch((e) => ({ reason: `error: ${e.message}` }));
      check((r?.reason ?? null) === want, `a redaction record ${what}: ${JSON.stringify(r)}`);
    }
  }

  done(fails);
})().catch((e) => done([`error: ${e?.stack || e}`]));
