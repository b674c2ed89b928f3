// Runs in the page (WebDriver executeAsyncScript): the viewer's own
// modules against a daemon that lies. `fetch` is replaced by the attacker:
// it answers every API path with bodies the test builds (signed notes,
// proofs, events), holding the log key where a case says so (a daemon that
// signs a fork) and not otherwise. The page's modules are the real ones;
// only the network answers are hostile. Returns the failed expectations.
const done = arguments[arguments.length - 1];
(async () => {
  const A = await attacker();
  const { world, v, enc, PLAN, SYSTEM, keyId, newKey, sign, as, checkpointText, signatureLine, cosignatureLine, note, node, mth, inclusion, consistency, leafOf, junk, events, answer, b64s, planRoutes, log, witness, planKey, systemKey, pinAll, planNote, bundle } = A;
  const checkModule = await import("/ui/assets/check.js");
  const { Broken } = checkModule;
  // Each case below is a first sight of its log: what an earlier case's
  // checker remembered of the same origin and key (a browser keeps the last
  // checkpoint it checked per log) is forgotten first. The last case checks
  // that memory itself.
  class PlanChecker extends checkModule.PlanChecker {
    constructor(plan) {
      for (const k of Object.keys(localStorage)) if (k === "logbook.seen" || k.startsWith("logbook.seen.") || k.startsWith("logbook.seen#") || k.startsWith("logbook.seen!")) localStorage.removeItem(k);
      super(plan);
    }
  }
  pinAll();
  const fails = [];
  const check = (ok, what) => { if (!ok) fails.push(what); };
  const refuses = async (what, f) => {
    try { await f(); fails.push(`${what}: accepted`); } catch (e) {
      if (!(e instanceof Broken) && !/not a|out of range|32 bytes|malformed|base64/.test(e.message)) fails.push(`${what}: ${e.message}`);
    }
  };


  // 1. A witnessed size ahead of the current checkpoint must still be bound
  //    to it: a daemon holding the log key shows this reader a fork F of
  //    size 2 while the witnesses cosigned the honest tree H of size 3.
  {
    const honest = [await junk(1), await junk(2), await junk(3)];
    const fork = [await junk(1), await junk(9)];
    const witnessed = await bundle(honest);
    world.routes = { ...planRoutes(PLAN, () => honest, () => planNote(fork)),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => witnessed };
    const c = new PlanChecker(PLAN);
    await c.refreshCheckpoint();
    await refuses("a fork behind a witnessed size ahead of it shown as witnessed", () => c.checkWitnessed());
    await refuses("the plan checkpoint after a witnessed fork", () => c.refreshCheckpoint());
    // The honest race: the current checkpoint is a prefix of the witnessed one.
    world.routes = { ...planRoutes(PLAN, () => honest, () => planNote(honest.slice(0, 2))),
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
    world.routes = planRoutes(PLAN, () => a, () => planNote(served));
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
      world.routes = planRoutes(PLAN, () => hs, async () => served);
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
    world.routes = planRoutes(PLAN, () => leaves, () => planNote(leaves));
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
    // A chain the daemon signed with a broken link, paged newest first: the
    // older event, loaded after the newer was checked, checks the link.
    {
      const bad = [list[0], list[1], { ...list[2], prev_hash: "not-seq-2" }];
      const badLeaves = await Promise.all(bad.map((e) => leafOf(v.entryBytes(e))));
      world.routes = planRoutes(PLAN, () => badLeaves, () => planNote(badLeaves));
      const b = new PlanChecker(PLAN);
      await b.refreshCheckpoint();
      const shown = new Map([[3, bad[2]]]);
      check((await b.checkEvent(bad[2], shown)).state === "verified", "the newer event alone verifies");
      shown.set(2, bad[1]);
      check((await b.checkEvent(bad[1], shown)).state === "broken", "a broken link found only once the older event is shown");
      world.routes = planRoutes(PLAN, () => leaves, () => planNote(leaves));
    }
    check((await state({ ...list[1], redacted: true, payload: null })) === "redacted", "an erased payload is redacted");
    check((await state({ ...list[1], redacted: true, payload: list[1].payload })) === "broken", "redacted with a payload");
    check((await state({ ...list[1], payload: JSON.parse('{"i": 1, "amount": 1250.5, "amount": 9}') })) === "broken", "a duplicate key whose last value differs");
    check((await state({ ...list[1], payload: JSON.parse('{"i": 1, "amount": 9, "amount": 1250.5}') })) === "verified", "a duplicate key whose last value is the hashed one");
    // The text shown for a payload is the text that was hashed (both come from the one parsed value).
    const dup = JSON.parse('{"amount": 9, "i": 1, "amount": 1250.5}');
    check(JSON.stringify(dup) === '{"amount":1250.5,"i":1}' && (await v.payloadHash(dup)) === list[1].payload_hash, "a duplicate key: shown and hashed differ");
    // A lone surrogate served for the signed six characters "\ud800": not the same text.
    const escaped = (await events(PLAN, [{ s: "\\ud800" }])).list[0];
    check((await v.payloadHash(JSON.parse('{"s": "\\ud800"}'))) !== escaped.payload_hash, "a lone surrogate hashes as the escaped text");
    // RFC 8785 in the page: members by UTF-16 code units, numbers as ECMAScript writes them.
    const jcs = await import("/ui/assets/jcs.js");
    for (const [text, want] of [
      [String.raw`{"\ufb33": 1, "\ud83d\ude00": 2, "\u20ac": 3, "\r": 4, "1": 5, "10": 6, "2": 7}`, '{"\\r":4,"1":5,"10":6,"2":7,"\u20ac":3,"\ud83d\ude00":2,"\ufb33":1}'],
      ["[1e21, -0, 5e-324, 0.30000000000000004, 1E+2, 100.0, 9007199254740991, 1e-7]", "[1e+21,0,5e-324,0.30000000000000004,100,100,9007199254740991,1e-7]"],
      [String.raw`"\u2028\u007f\u001f\"\\/"`, '"\u2028\u007f\\u001f\\"\\\\/"'],
    ]) {
      const got = jcs.canonicalize(JSON.parse(text));
      check(got === want, `JCS of ${text}: ${got}`);
    }
    // Not well-formed: a number JSON.parse makes Infinity, a missing field, a
    // proof that is not base64. Each is broken; the others are still checked.
    world.routes[`/api/plans/${PLAN}/events/3/inclusion`] = () => ({ proof: ["not base64!"] });
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
    // No proof because the daemon is out of reach or failing: not checked
    // yet (pending, checked again), never verified; refused outright: broken.
    const path = `/api/plans/${PLAN}/events/2/inclusion`;
    const honest = world.routes[path];
    const again = new PlanChecker(PLAN);
    await again.refreshCheckpoint();
    const shown2 = new Map([[2, list[1]]]);
    for (const [what, route, want] of [
      ["out of reach", () => { throw new TypeError("Failed to fetch"); }, "pending"],
      ["failing", () => answer({ title: "unavailable" }, 503), "pending"],
      ["back", honest, "verified"],
    ]) {
      world.routes[path] = route;
      await again.checkEvents([list[1]], shown2);
      check(again.results.get(2)?.state === want, `inclusion proof ${what}: ${JSON.stringify(again.results.get(2))}`);
    }
    world.routes[path] = () => answer({ title: "no such event" }, 404);
    check((await state(list[1])) === "broken", "an inclusion proof refused (404) not shown broken");
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
    // RFC 9162: every hash is 32 bytes.
    const empty = new Uint8Array();
    check(!(await v.verifyConsistency(3, 3, [], empty, empty)), "consistency between two empty roots accepted");
    check(!(await v.verifyInclusion(0, 1, empty, [], empty)), "inclusion of an empty leaf hash accepted");
    check(!(await v.verifyInclusion(0, 5, hs[0], [...p.slice(0, -1), Uint8Array.from([...p.at(-1), 0])], root)), "a 33-byte proof hash accepted");
  }

  // 5b. Every inclusion and consistency proof of trees up to 12 leaves (the
  //     attacker's proofs come from RFC 9162's recursive definitions, the
  //     page's checks from its iterative ones): the honest one verifies;
  //     one flipped bit in any hash, one hash more or less, does not.
  {
    const hs = await Promise.all(Array.from({ length: 12 }, (_, i) => junk(`p${i}`)));
    const roots = [await v.sha256(new Uint8Array())];
    for (let n = 1; n <= 12; n++) roots.push(await mth(hs.slice(0, n)));
    const flip = (h) => { const c = Uint8Array.from(h); c[c.length - 1] ^= 1; return c; };
    const variants = (proof) => [
      ...proof.map((_, i) => proof.map((h, j) => (i === j ? flip(h) : h))),
      [...proof, hs[0]], proof.slice(0, -1), proof.slice(1),
    ].filter((p) => p.length !== proof.length || p.some((h, i) => !v.equal(h, proof[i])));
    let bad = 0;
    for (let n = 1; n <= 12; n++) {
      for (let m = 0; m < n; m++) {
        const proof = await inclusion(m, hs.slice(0, n));
        if (!(await v.verifyInclusion(m, n, hs[m], proof, roots[n]))) { bad++; fails.push(`honest inclusion ${m}/${n}`); }
        if (await v.verifyInclusion(m, n, flip(hs[m]), proof, roots[n])) { bad++; fails.push(`inclusion ${m}/${n} of a flipped leaf`); }
        for (const p of variants(proof)) {
          if (await v.verifyInclusion(m, n, hs[m], p, roots[n])) { bad++; fails.push(`inclusion ${m}/${n} with an altered proof`); }
        }
      }
      for (let m = 1; m <= n; m++) {
        const proof = await consistency(m, hs.slice(0, n));
        if (!(await v.verifyConsistency(m, n, proof, roots[m], roots[n]))) { bad++; fails.push(`honest consistency ${m}->${n}`); }
        if (await v.verifyConsistency(m, n, proof, flip(roots[m]), roots[n])) { bad++; fails.push(`consistency ${m}->${n} from a flipped root`); }
        if (await v.verifyConsistency(m, n, proof, roots[m], flip(roots[n]))) { bad++; fails.push(`consistency ${m}->${n} to a flipped root`); }
        for (const p of variants(proof)) {
          if (await v.verifyConsistency(m, n, p, roots[m], roots[n])) { bad++; fails.push(`consistency ${m}->${n} with an altered proof`); }
        }
      }
    }
    check(bad === 0, `${bad} proof checks wrong`);
  }

  // 6. Witness bundles.
  {
    const hs = [await junk(1), await junk(2)];
    world.routes = planRoutes(PLAN, () => hs, () => planNote(hs));
    const run = async (b) => {
      world.routes[`/api/plans/${PLAN}/checkpoint?witnessed=1`] = () => b;
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
    const replayed = await bundle(hs, []);
    replayed.heads_checkpoint += await cosignatureLine(witness, checkpointText(log.name, 2, await junk(11)));
    check((await run(replayed)).cosigned.length === 0, "a cosignature of another heads checkpoint counted");
    const retimed = await bundle(hs);
    retimed.heads_checkpoint = retimed.heads_checkpoint.replace(/(\u2014 witness\.test\/w1 )(\S+)/, (_, a, b) => {
      const raw = v.b64decode(b); raw[11] ^= 1; return a + v.b64encode(raw); // another time, same signature
    });
    check((await run(retimed)).cosigned.length === 0, "a cosignature with its time changed counted");
    // The same witness key pinned twice (or under a second name) is one witness.
    const alias = await as(witness, "witness.test/alias");
    pinAll([witness.vkey, witness.vkey, alias.vkey], 2);
    const aliased = await run(await bundle(hs, [witness, alias]));
    check(aliased.cosigned.length === 1, `one witness key counted ${aliased.cosigned.length} times under duplicate pins`);
    // A stored quorum of 0 (the page once allowed it) needs one witness.
    pinAll([witness.vkey], 0);
    const none = await run(await bundle(hs, []));
    check(none.quorum === 1 && none.cosigned.length === 0, `a quorum of 0 read as ${none.quorum}`);
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
      world.routes = {
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
      await c.checkEvents([erased], new Map([[erased.seq, erased]]));
      const r = await c.redaction(1).catch((e) => ({ reason: `error: ${e.message}` }));
      check((r?.reason ?? null) === want, `a redaction record ${what}: ${JSON.stringify(r)}`);
    }
    // The system journal out of reach at first: tried again, then found.
    {
      serve([recordLeaf]);
      const honest = world.routes[`/api/plans/${SYSTEM}/checkpoint`];
      world.routes[`/api/plans/${SYSTEM}/checkpoint`] = () => answer({ title: "unavailable" }, 503);
      const c = new PlanChecker(PLAN);
      await c.refreshCheckpoint();
      const first = await c.redaction(1).then(() => "resolved", () => "failed");
      world.routes[`/api/plans/${SYSTEM}/checkpoint`] = honest;
      const r = await c.redaction(1).catch((e) => ({ reason: `error: ${e.message}` }));
      check(first === "failed" && r?.reason === "forged reason", `a redaction record after the system journal came back: ${first}, ${JSON.stringify(r)}`);
    }
    // In the log, but its proof cannot be fetched now: unknown (undefined),
    // not "no record" (null, which says the erasure was behind the daemon's back).
    serve([recordLeaf]);
    world.routes[`/api/plans/${SYSTEM}/events/1/inclusion`] = () => answer({ title: "unavailable" }, 503);
    const c = new PlanChecker(PLAN);
    await c.refreshCheckpoint();
    const r = await c.redaction(1).catch((e) => ({ reason: `error: ${e.message}` }));
    check(r === undefined, `a redaction record whose proof cannot be fetched now: ${JSON.stringify(r)}`);
  }

  // A check still running when the page lets its event go and shows
  // another under the same seq (a reload of the newest events) must not
  // mark that one: its result belongs to the event it checked.
  {
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    world.routes = { ...planRoutes(PLAN, () => leaves, () => planNote(leaves)) };
    const path = `/api/plans/${PLAN}/events/2/inclusion`;
    const honest = world.routes[path];
    let release;
    const stalled = new Promise((r) => { release = r; });
    world.routes[path] = async (u) => { await stalled; return honest(u); };
    const c = new PlanChecker(PLAN);
    await c.refreshCheckpoint();
    const shown = new Map(list.map((e) => [e.seq, e]));
    const running = c.checkEvents([list[1]], shown);
    shown.set(2, { ...list[1], actor: "mallory" });
    c.results.clear();
    release();
    await running;
    check(c.results.get(2) === undefined, `a late result marked the event shown in its place: ${JSON.stringify(c.results.get(2))}`);
  }

  // The last checkpoint checked is remembered between visits: a page
  // opened again that is served a smaller tree, or another root at the
  // same size, is broken, not a first sight.
  {
    const tree = [await junk(1), await junk(2), await junk(3)];
    for (const [what, later] of [["smaller", tree.slice(0, 2)], ["forked", [tree[0], tree[1], await junk(9)]]]) {
      world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
      await new PlanChecker(PLAN).refreshCheckpoint(); // the first visit
      world.routes = { ...planRoutes(PLAN, () => later, () => planNote(later)) };
      const revisit = new checkModule.PlanChecker(PLAN); // a later one: memory kept
      await refuses(`a ${what} checkpoint on a later visit`, () => revisit.refreshCheckpoint());
      // The fork stays proven on the visit after, though the daemon now
      // serves the history the browser first saw; until the reader forgets.
      world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
      await refuses(`the history first seen, after a ${what} one was proven`, () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
      checkModule.forgetSeen();
      await new checkModule.PlanChecker(PLAN).refreshCheckpoint().catch((e) => fails.push(`after forgetting: ${e.message}`));
    }
  }

  // An old tab must not lower what another tab saw since: a page that
  // checked size 2, while another checked size 3, is served size 2 again.
  {
    const tree = [await junk(1), await junk(2), await junk(3)];
    let served = tree.slice(0, 2);
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(served)) };
    const old = new PlanChecker(PLAN);
    await old.refreshCheckpoint();
    served = tree;
    await new checkModule.PlanChecker(PLAN).refreshCheckpoint(); // the other tab
    served = tree.slice(0, 2);
    await refuses("an old tab's checkpoint below what another tab saw", () => old.refreshCheckpoint());
    await refuses("a visit after an old tab was served a rollback", () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
    checkModule.forgetSeen();
  }

  /** Holds back the plan's consistency answers until `release()`: `stalled` is that route. */
  const stallConsistency = () => {
    const path = `/api/plans/${PLAN}/consistency`;
    const honest = world.routes[path];
    let release;
    const held = new Promise((r) => { release = r; });
    const stalled = async (u) => { await held; return honest(u); };
    world.routes[path] = stalled;
    return { path, honest, stalled, release };
  };

  // The same with the old tab's check held back by the daemon until the
  // other tab has kept its larger size: the old tab's late keep must not
  // lower it (helper-117's race).
  {
    const tree = [await junk(1), await junk(2), await junk(3), await junk(4)];
    let served = tree.slice(0, 2);
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(served)) };
    const old = new PlanChecker(PLAN);
    await old.refreshCheckpoint();
    const { path, honest, release } = stallConsistency();
    served = tree.slice(0, 3);
    const late = old.refreshCheckpoint().then(() => null, (e) => e);
    await new Promise((r) => setTimeout(r, 50));
    world.routes[path] = honest;
    served = tree;
    await new checkModule.PlanChecker(PLAN).refreshCheckpoint(); // the other tab keeps 4
    release();
    // An honest race (helper-119): the late answer is older than what the
    // other tab kept, not a rollback; asked again, the page gets size 4.
    const outcome = await late;
    check(outcome === null && old.checkpoint?.size === 4, `an honest late answer below another tab's: ${outcome?.message ?? old.checkpoint?.size}`);
    served = tree.slice(0, 3);
    await refuses("a visit after an old tab's late keep of a smaller size", () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
    checkModule.forgetSeen();
  }

  // And when the other tab kept another history of the same size (the
  // daemon signed a fork for it) while this tab's check was held back:
  // this tab must find the fork, not write over it.
  {
    const tree = [await junk(1), await junk(2), await junk(3)];
    const forkTree = [tree[0], tree[1], await junk(9)];
    let served = tree.slice(0, 2);
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(served)) };
    const old = new PlanChecker(PLAN);
    await old.refreshCheckpoint();
    const { path, stalled, release } = stallConsistency();
    served = tree;
    const late = old.refreshCheckpoint().then(() => null, (e) => e);
    await new Promise((r) => setTimeout(r, 50));
    world.routes = { ...planRoutes(PLAN, () => forkTree, () => planNote(forkTree)) };
    await new checkModule.PlanChecker(PLAN).refreshCheckpoint(); // the other tab keeps the fork
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
    world.routes[path] = stalled;
    release();
    const outcome = await late;
    check(outcome instanceof Broken, `a fork kept by another tab while this one checked: ${outcome?.message ?? "accepted"}`);
    await refuses("a visit after two tabs saw two histories", () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
    checkModule.forgetSeen();
  }

  // A tab that read the memory before another proved a fork, and writes
  // it back a moment later (tabs see each other's writes late, in no lock):
  // the fork stays proven.
  {
    const tree = [await junk(1), await junk(2), await junk(3)];
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
    await new PlanChecker(PLAN).refreshCheckpoint(); // kept: size 3
    const gen = localStorage.getItem(checkModule.GENERATION);
    const key = gen ? `logbook.seen.${gen}` : "logbook.seen";
    const stale = localStorage.getItem(key); // the other tab's copy
    check(stale !== null, `no memory kept under ${key}`);
    const forkTree = [tree[0], tree[1], await junk(9)];
    world.routes = { ...planRoutes(PLAN, () => forkTree, () => planNote(forkTree)) };
    await refuses("a fork of the kept checkpoint", () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
    localStorage.setItem(key, stale); // the other tab's late write
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
    await refuses("a visit after another tab wrote over the fork mark", () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
    checkModule.forgetSeen();
    const after = await new checkModule.PlanChecker(PLAN).refreshCheckpoint().then(() => null, (e) => e);
    check(after === null, `a visit after forgetting a fork kept in its own key: ${after?.message}`);
    checkModule.forgetSeen();
  }

  // A later visit (a new checker) answered a smaller checkpoint once, then
  // the kept one again: the memory was kept before the request left, so
  // that answer is a rollback, not a late one (helper-120).
  {
    const tree = [await junk(1), await junk(2), await junk(3), await junk(4)];
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
    await new PlanChecker(PLAN).refreshCheckpoint(); // the first visit keeps 4
    let answers = 0;
    world.routes[`/api/plans/${PLAN}/checkpoint`] = () => planNote(answers++ === 0 ? tree.slice(0, 2) : tree);
    await refuses("a rollback answered once to a later visit", () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
    checkModule.forgetSeen();
  }

  // The same while another tab keeps a larger checkpoint as the smaller
  // answer is on its way: the one kept before the request still convicts
  // it (helper-121).
  {
    const tree = [await junk(1), await junk(2), await junk(3), await junk(4)];
    let served = tree.slice(0, 3);
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(served)) };
    await new PlanChecker(PLAN).refreshCheckpoint(); // the first visit keeps 3
    let release;
    const held = new Promise((r) => { release = r; });
    let calls = 0;
    world.routes[`/api/plans/${PLAN}/checkpoint`] = async () => {
      if (calls++ === 0) { await held; return planNote(tree.slice(0, 2)); }
      return planNote(served);
    };
    const visit = new checkModule.PlanChecker(PLAN).refreshCheckpoint().then(() => null, (e) => e);
    await new Promise((r) => setTimeout(r, 50));
    served = tree;
    await new checkModule.PlanChecker(PLAN).refreshCheckpoint(); // another tab keeps 4
    release();
    const outcome = await visit;
    check(outcome instanceof Broken, `a rollback below the memory kept before the request, with another tab keeping more meanwhile: ${outcome?.message ?? "accepted"}`);
    checkModule.forgetSeen();
  }

  // Forget, after an operator restored an older store, while a tab of the
  // plan stays open: that tab's next check is a first sight too, and it
  // neither calls the restored history a rollback nor keeps its old
  // checkpoint again (helper-122's trap).
  {
    const { list, leaves } = await events(PLAN, [{ n: 1 }, { n: 2 }, { n: 3 }]);
    let served = leaves;
    world.routes = { ...planRoutes(PLAN, () => served, () => planNote(served)) };
    const open = new PlanChecker(PLAN);
    const shown = new Map(list.map((e) => [e.seq, e]));
    await open.refreshCheckpoint(); // the open tab checked size 3
    await open.checkEvents(list, shown);
    check(open.results.get(3)?.state === "verified", `seq 3 before the restore: ${JSON.stringify(open.results.get(3))}`);
    served = leaves.slice(0, 2); // the store restored to size 2
    checkModule.forgetSeen();
    const outcome = await open.refreshCheckpoint().then(() => null, (e) => e);
    check(outcome === null && open.checkpoint?.size === 2, `a tab left open across a Forget: ${outcome?.message ?? open.checkpoint?.size}`);
    // What it checked before the Forget is checked again: seq 3 is in no
    // checkpoint of the restored log.
    await open.checkEvents(list, shown);
    check(open.results.get(3)?.state !== "verified" && open.results.get(2)?.state === "verified",
      `events checked before a Forget: ${JSON.stringify([2, 3].map((s) => open.results.get(s)?.state))}`);
    const visit = await new checkModule.PlanChecker(PLAN).refreshCheckpoint().then(() => null, (e) => e);
    check(visit === null, `a visit after a Forget with a tab left open: ${visit?.message}`);
    checkModule.forgetSeen();
  }

  // The same with that tab's request on its way as Forget is clicked: what
  // it proves against the memory from before is not kept as a fork.
  {
    const tree = [await junk(1), await junk(2), await junk(3)];
    let served = tree;
    world.routes = { ...planRoutes(PLAN, () => served, () => planNote(served)) };
    const open = new PlanChecker(PLAN);
    await open.refreshCheckpoint(); // the open tab checked size 3
    let release;
    const held = new Promise((r) => { release = r; });
    const path = `/api/plans/${PLAN}/checkpoint`;
    const honest = world.routes[path];
    world.routes[path] = async (u) => { await held; return honest(u); };
    served = tree.slice(0, 2); // the store restored to size 2
    const inFlight = open.refreshCheckpoint().then(() => null, (e) => e);
    await new Promise((r) => setTimeout(r, 50));
    checkModule.forgetSeen();
    release();
    // Checked again as a first sight: the answer after the Forget is size 2.
    const outcome = await inFlight;
    check(outcome === null && open.checkpoint?.size === 2, `a check in flight across a Forget: ${outcome?.message ?? open.checkpoint?.size}`);
    world.routes[path] = honest;
    const visit = await new checkModule.PlanChecker(PLAN).refreshCheckpoint().then(() => null, (e) => e);
    check(visit === null, `a visit after a Forget during a check: ${visit?.message}`);
    const again = await open.refreshCheckpoint().then(() => null, (e) => e);
    check(again === null && open.checkpoint?.size === 2, `the open tab's next check after a Forget during a check: ${again?.message ?? open.checkpoint?.size}`);
    checkModule.forgetSeen();
  }

  // A tab that has not seen the Forget yet writes its old memory back
  // (tabs see each other's writes late): that memory is no one's now.
  {
    const tree = [await junk(1), await junk(2), await junk(3)];
    let served = tree;
    world.routes = { ...planRoutes(PLAN, () => served, () => planNote(served)) };
    await new PlanChecker(PLAN).refreshCheckpoint(); // kept: size 3
    const copies = Object.keys(localStorage).filter((k) => k === "logbook.seen" || k.startsWith("logbook.seen."))
      .map((k) => [k, localStorage.getItem(k)]);
    check(copies.length === 1, `one memory kept: ${JSON.stringify(copies)}`);
    checkModule.forgetSeen();
    for (const [k, text] of copies) localStorage.setItem(k, text); // the stale tab's write
    served = tree.slice(0, 2); // the store restored to size 2
    const visit = await new checkModule.PlanChecker(PLAN).refreshCheckpoint().then(() => null, (e) => e);
    check(visit === null, `a visit after a stale tab wrote the forgotten memory back: ${visit?.message}`);
    checkModule.forgetSeen();
  }

  // An old entry of the plan inside a freshly cosigned heads tree (a
  // rollback that needs no new signature): the entries after it come with
  // the bundle, and the plan's newer entry among them gives it away; left
  // out, they do not rebuild the signed root.
  {
    const tree = [await junk(1), await junk(2), await junk(3)];
    const [oldCp, newCp] = [await planNote(tree.slice(0, 2)), await planNote(tree)];
    const entryOf = (cp) => v.headsEntry(PLAN, v.parseCheckpoint(v.parseNote(cp).text), false);
    const otherEntry = v.headsEntry("0192f3a4-0000-7000-8000-0000000000ff", { size: 1, root: await junk(5) }, false);
    const texts = [entryOf(oldCp), entryOf(newCp), otherEntry];
    const leaves = await Promise.all(texts.map((t) => leafOf(enc.encode(t))));
    const headsText = checkpointText(log.name, 3, await mth(leaves));
    const heads = await note(headsText, signatureLine(log, headsText), cosignatureLine(witness, headsText));
    const stale = async (later) => ({ heads_checkpoint: heads, plan_checkpoint: oldCp, heads_entry: texts[0],
      heads_index: 0, inclusion_proof: b64s(await inclusion(0, leaves)), later_entries: later });
    for (const [what, later] of [["an old entry of the plan in a fresh heads tree", texts.slice(1)],
      ["the plan's newer entry left out of later_entries", texts.slice(2)],
      ["no later_entries", undefined]]) {
      const served = await stale(later);
      world.routes = { ...planRoutes(PLAN, () => tree.slice(0, 2), () => oldCp),
        [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => served };
      const c = new PlanChecker(PLAN);
      await c.refreshCheckpoint();
      await refuses(`${what} shown as witnessed`, () => c.checkWitnessed());
    }
    // The newest entry, with nothing after it of the plan, is witnessed.
    const fresh = { heads_checkpoint: heads, plan_checkpoint: newCp, heads_entry: texts[1],
      heads_index: 1, inclusion_proof: b64s(await inclusion(1, leaves)), later_entries: texts.slice(2) };
    world.routes = { ...planRoutes(PLAN, () => tree, () => newCp),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => fresh };
    const h = new PlanChecker(PLAN);
    await h.refreshCheckpoint();
    const w = await h.checkWitnessed().catch((e) => ({ error: e.message }));
    check(w.size === 3 && w.headsIndex === 1 && w.cosigned?.length === 1, `the plan's latest entry with the entries after it: ${JSON.stringify(w)}`);
  }

  // A deleted plan (the daemon answers 410 for its checkpoint and proofs):
  // its signed deletion is checked against what this browser kept of it.
  {
    const tree = [await junk(1), await junk(2), await junk(3)];
    const witnessedPath = `/api/plans/${PLAN}/checkpoint?witnessed=1`;
    const gone = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
    // Neither checkpoint nor proofs: what a deleted plan serves.
    for (const path of Object.keys(gone)) if (path !== witnessedPath) gone[path] = () => answer({ title: "Plan deleted" }, 410);
    const deletedAt = async (hs, deleted = true) => {
      const b = await bundle(hs, [witness], PLAN, deleted);
      world.routes = { ...gone, [witnessedPath]: () => b };
    };
    // A first sight: the deletion is signed and cosigned.
    await deletedAt(tree);
    const first = await new PlanChecker(PLAN).checkDeleted().catch((e) => ({ error: e.message }));
    check(first.size === 3 && first.firstSight && !first.grew && first.cosigned?.length === 1, `a signed deletion on a first sight: ${JSON.stringify(first)}`);
    world.routes = { ...gone, [witnessedPath]: () => answer({ title: "Not in the heads log" }, 409) };
    const none = await new PlanChecker(PLAN).checkDeleted().catch((e) => ({ error: e.message }));
    check(none.pending === true, `no bundle yet: ${JSON.stringify(none)}`);
    // Signed by another instance key: broken.
    const other = await newKey("logbook/hostile.test", 0x01);
    const forged = await bundle(tree, [witness], PLAN, true, other);
    world.routes = { ...gone, [witnessedPath]: () => forged };
    await refuses("a deletion signed by another key", () => new PlanChecker(PLAN).checkDeleted());
    // Held against what this browser checked before the deletion.
    for (const [what, final, ok] of [
      ["deleted below the size checked", tree.slice(0, 2), false],
      ["deleted at the size checked with another root", [tree[0], tree[1], await junk(9)], false],
      ["deleted above the size checked", [...tree, await junk(4)], true],
      ["deleted at the size checked", tree, true],
    ]) {
      world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
      await new PlanChecker(PLAN).refreshCheckpoint(); // a visit before the deletion: kept size 3
      await deletedAt(final);
      const visit = () => new checkModule.PlanChecker(PLAN).checkDeleted();
      if (ok) {
        const d = await visit().catch((e) => ({ error: e.message }));
        check(d.size === final.length && d.grew === (final.length > 3) && !d.firstSight, `${what}: ${JSON.stringify(d)}`);
      } else {
        await refuses(what, visit);
        // Proven for good: the history first seen, served again, does not clear it.
        world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
        await refuses(`the history first seen, after it was ${what}`, () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
      }
    }
    checkModule.forgetSeen();
    // A deletion once checked is kept: the plan served live again
    // afterwards (its id is never used again) is a second history, even
    // one that extends what was checked before the deletion.
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree.slice(0, 2))) };
    await new PlanChecker(PLAN).refreshCheckpoint(); // kept: size 2
    await deletedAt(tree);
    const checked = await new checkModule.PlanChecker(PLAN).checkDeleted().catch((e) => ({ error: e.message }));
    check(checked.size === 3 && checked.grew === true, `a deletion above the size checked: ${JSON.stringify(checked)}`);
    const again = await new checkModule.PlanChecker(PLAN).checkDeleted().catch((e) => ({ error: e.message }));
    check(again.size === 3 && !again.firstSight, `the same deletion on the visit after: ${JSON.stringify(again)}`);
    // The live checkpoint at (or below) the deletion: an answer another tab's
    // deletion check overtook, no proof of anything; not shown as live either.
    for (const [what, served] of [["at", tree], ["below", tree.slice(0, 2)]]) {
      world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(served)) };
      const late = await new checkModule.PlanChecker(PLAN).refreshCheckpoint().then(() => null, (e) => e);
      check(late !== null && !(late instanceof Broken), `a live checkpoint ${what} the checked deletion: ${late?.message ?? "accepted"}`);
    }
    // The deletion's own key lost (its bound reached): the memory holds it too.
    for (const k of Object.keys(localStorage)) if (k.startsWith("logbook.seen") && k.includes("!")) localStorage.removeItem(k);
    const revived = [...tree, await junk(4)];
    world.routes = { ...planRoutes(PLAN, () => revived, () => planNote(revived)) };
    await refuses("the plan live again after its deletion was checked", () => new checkModule.PlanChecker(PLAN).refreshCheckpoint());
    await deletedAt(revived);
    await refuses("another deletion after one was checked", () => new checkModule.PlanChecker(PLAN).checkDeleted());
    checkModule.forgetSeen();
    // A 410 whose bundle records the plan live: not backed, and still held
    // against the memory (another root at the size checked is a fork).
    world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
    await new PlanChecker(PLAN).refreshCheckpoint(); // kept: size 3
    await deletedAt(tree, false);
    const live = await new checkModule.PlanChecker(PLAN).checkDeleted().catch((e) => ({ error: e.message }));
    check(live.live === 3, `a 410 with a live bundle: ${JSON.stringify(live)}`);
    // A live entry below the size checked may be an older heads tree's: not backed, no proof.
    await deletedAt(tree.slice(0, 2), false);
    const older = await new checkModule.PlanChecker(PLAN).checkDeleted().catch((e) => ({ error: e.message }));
    check(older.live === 2, `a 410 with an older live bundle: ${JSON.stringify(older)}`);
    await deletedAt([tree[0], tree[1], await junk(8)], false);
    await refuses("a 410 with a live bundle of another root at the size checked", () => new checkModule.PlanChecker(PLAN).checkDeleted());
    checkModule.forgetSeen();
    // With nothing kept (storage cleared, the generation unchanged), what
    // the page itself checked while the plan was live still counts.
    {
      world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree)) };
      const page = new PlanChecker(PLAN);
      await page.refreshCheckpoint(); // this page checked size 3
      for (const k of Object.keys(localStorage)) if (k === "logbook.seen" || k.startsWith("logbook.seen.") || k.startsWith("logbook.seen#") || k.startsWith("logbook.seen!")) localStorage.removeItem(k);
      await deletedAt(tree.slice(0, 2));
      await refuses("deleted below the size this page checked, nothing kept", () => page.checkDeleted());
      checkModule.forgetSeen();
      // Growth past what the page checked is said, though nothing was kept.
      world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree.slice(0, 2))) };
      const grown = new PlanChecker(PLAN);
      await grown.refreshCheckpoint(); // this page checked size 2
      for (const k of Object.keys(localStorage)) if (k === "logbook.seen" || k.startsWith("logbook.seen.") || k.startsWith("logbook.seen#") || k.startsWith("logbook.seen!")) localStorage.removeItem(k);
      await deletedAt(tree);
      const d = await grown.checkDeleted().catch((e) => ({ error: e.message }));
      check(d.size === 3 && d.grew === true && d.firstSight === false, `deleted above the size this page checked, nothing kept: ${JSON.stringify(d)}`);
      checkModule.forgetSeen();
    }
    // An event whose proof is refused with 410 (the plan deleted after the
    // checkpoint was checked) is pending, not broken.
    {
      const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
      world.routes = { ...planRoutes(PLAN, () => leaves, () => planNote(leaves)) };
      const c = new PlanChecker(PLAN);
      await c.refreshCheckpoint();
      world.routes[`/api/plans/${PLAN}/events/1/inclusion`] = () => answer({ title: "Plan deleted", status: 410 }, 410);
      await c.checkEvents([list[0]], new Map([[1, list[0]]]));
      check(c.results.get(1)?.state === "pending", `an event whose proof is 410: ${JSON.stringify(c.results.get(1))}`);
      checkModule.forgetSeen();
    }
    // A kept deletion does not hide another root at a size checked before it.
    {
      world.routes = { ...planRoutes(PLAN, () => tree, () => planNote(tree.slice(0, 2))) };
      await new PlanChecker(PLAN).refreshCheckpoint(); // kept: size 2
      await deletedAt(tree);
      await new checkModule.PlanChecker(PLAN).checkDeleted(); // kept: deleted at 3
      const other = [tree[0], await junk(7)];
      world.routes = { ...planRoutes(PLAN, () => other, () => planNote(other)) };
      const split = await new checkModule.PlanChecker(PLAN).refreshCheckpoint().then(() => null, (e) => e);
      check(split instanceof Broken, `another root at a size checked, below a kept deletion: ${split?.message ?? "accepted"}`);
      checkModule.forgetSeen();
    }
    // Deleted before the instance kept a heads log: no signed record (410).
    world.routes = { ...gone, [witnessedPath]: () => answer({ title: "Plan deleted" }, 410) };
    const unsigned = await new PlanChecker(PLAN).checkDeleted().catch((e) => ({ error: e.message }));
    check(unsigned.unsigned === true, `a deletion with no signed record: ${JSON.stringify(unsigned)}`);
  }

  done(fails);
})().catch((e) => done([`error: ${e?.stack || e}`]));
