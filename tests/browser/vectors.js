// Runs in the page (WebDriver executeAsyncScript): the viewer's own
// modules against the spec's vectors, with the browser's WebCrypto.
const [vec, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const jcs = await import("/ui/assets/jcs.js");
  const v = await import("/ui/assets/verify.js");
  const fails = [];
  const check = (ok, what) => { if (!ok) fails.push(what); };
  for (const e of vec.journal.events) {
    check(jcs.canonicalize(e.event.payload) === e.payload_canonical, `JCS ${e.payload_canonical}`);
    check((await v.payloadHash(e.event.payload)) === e.payload_hash, `payload_hash ${e.payload_hash}`);
  }
  for (const p of vec.plan.plans) {
    const leaves = [];
    for (const e of p.entries) {
      const entry = v.entryBytes(JSON.parse(e.entry));
      check(new TextDecoder().decode(entry) === e.entry, `entry ${e.seq}`);
      const leaf = await v.leafHash(entry);
      check(v.b64encode(leaf) === e.leaf_hash, `leaf ${e.seq}`);
      leaves.push(leaf);
    }
    const root = (n) => v.b64decode(p.roots[n]);
    for (const i of p.inclusion) {
      const proof = i.proof.map(v.b64decode);
      check(await v.verifyInclusion(i.leaf_index, i.tree_size, leaves[i.leaf_index], proof, root(i.tree_size)), `inclusion ${i.leaf_index}/${i.tree_size}`);
      check(!(await v.verifyInclusion(i.leaf_index, i.tree_size, leaves[(i.leaf_index + 1) % leaves.length], proof, root(i.tree_size))) || leaves.length === 1, `wrong leaf refused ${i.leaf_index}`);
    }
    for (const c of p.consistency) {
      if (c.from === 0) continue;
      check(await v.verifyConsistency(c.from, c.to, c.proof.map(v.b64decode), root(c.from), root(c.to)), `consistency ${c.from}->${c.to}`);
    }
  }
  const lc = vec.checkpoint;
  const planKey = await v.planKey(await v.parseVkey(lc.instance_vkey), lc.plan_id);
  check(planKey.name + "+" + v.hex(planKey.id) === lc.plan_vkey.split("+").slice(0, 2).join("+"), "plan key derived");
  const signed = await v.verifyCheckpoint(lc.note, planKey);
  check(signed.checkpoint.size === lc.size, "checkpoint size");
  let refused = false;
  try { await v.verifyCheckpoint(lc.note.replace(`\n${lc.size}\n`, `\n${lc.size + 1}\n`), planKey); } catch { refused = true; }
  check(refused, "an altered checkpoint is refused");
  const hl = vec.heads;
  const instance = await v.parseVkey(hl.instance_vkey);
  const heads = await v.verifyCheckpoint(hl.bundle.heads_checkpoint, instance);
  const cosigned = await v.verifyCosignatures(heads.note, [await v.parseVkey(hl.witness_vkey, 4)]);
  check(cosigned.length === 1, "the witness cosignature verifies");
  const planId = JSON.parse(hl.bundle.heads_entry).plan_id;
  const planCp = await v.verifyCheckpoint(hl.bundle.plan_checkpoint, await v.planKey(instance, planId));
  check(v.headsEntry(planId, planCp.checkpoint, false) === hl.bundle.heads_entry, "heads entry recomputed");
  const leaf = await v.sha256(v.concat(Uint8Array.of(0), new TextEncoder().encode(hl.bundle.heads_entry)));
  check(await v.verifyInclusion(hl.bundle.heads_index, heads.checkpoint.size, leaf, hl.bundle.inclusion_proof.map(v.b64decode), heads.checkpoint.root), "heads inclusion");
  // The entries after the bundle's rebuild the heads root, and none is its plan's.
  const enc = new TextEncoder();
  const leavesOf = (texts) => Promise.all(texts.map((t) => v.leafHash(enc.encode(t))));
  const rebuilt = await v.rootFromLeaf(hl.bundle.heads_index, hl.bundle.inclusion_proof.map(v.b64decode), [leaf, ...await leavesOf(hl.bundle.later_entries)]);
  check(rebuilt && v.equal(rebuilt, heads.checkpoint.root), "heads entries after the bundle's rebuild the root");
  check(hl.bundle.later_entries.every((t) => v.headsEntryPlan(t) !== null && v.headsEntryPlan(t) !== planId), "no later entry is the plan's");
  const stale = hl.stale_bundle;
  check(stale.later_entries.some((t) => v.headsEntryPlan(t) === planId), "the stale bundle's later entries record its plan again");
  const staleLeaves = await leavesOf([stale.heads_entry, ...stale.later_entries]);
  const staleRoot = await v.rootFromLeaf(stale.heads_index, stale.inclusion_proof.map(v.b64decode), staleLeaves);
  check(staleRoot && v.equal(staleRoot, heads.checkpoint.root), "the stale bundle's entries rebuild the root (its plan's later entry gives it away)");
  const hidden = staleLeaves.filter((_, i) => i === 0 || v.headsEntryPlan(stale.later_entries[i - 1]) !== planId);
  const hiddenRoot = await v.rootFromLeaf(stale.heads_index, stale.inclusion_proof.map(v.b64decode), hidden);
  check(!hiddenRoot || !v.equal(hiddenRoot, heads.checkpoint.root), "leaving the plan's later entry out does not rebuild the root");
  check(v.headsEntryPlan('{"plan_id":"0192F3A4-0000-7000-8000-000000000001","root":"' + hl.bundle.later_entries[0].split('"root":"')[1]) === null, "an uppercase plan id is not an entry");
  done(fails);
})().catch((e) => done([`error: ${e}`]));
