// Runs in the page after attacker.js: opens the real plan view (plan.js)
// in a fresh element against a lying daemon set up for one case
// (arguments[0]), and returns at once; the test then waits for what the
// page shows (#plan-verdict, #witnessed, the rows).
const [which, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const { world, PLAN, junk, events, planRoutes, planNote, bundle, pinAll, answer, newKey, log } = await attacker();
  const { planView } = await import("/ui/assets/plan.js");
  pinAll();
  // Replaces EventSource with a stream the case drives: once the page first
  // shows "verdict verified", `then(stream, verdict)` runs, once.
  const onceVerified = (then) => {
    let stream = null;
    window.EventSource = class {
      static CLOSED = 2;
      constructor() { this.readyState = 1; stream = this; setTimeout(() => this.onopen?.(), 0); }
      addEventListener() {}
      close() { this.readyState = 2; }
    };
    const verdict = () => document.getElementById("plan-verdict")?.className;
    const live = setInterval(() => {
      if (verdict() !== "verdict verified" || !stream) return;
      clearInterval(live);
      then(stream, verdict);
    }, 50);
  };
  const plan = (list) => ({
    [`/api/plans/${PLAN}`]: () => ({ plan_id: PLAN, head_seq: list.length, count: list.length, first_at: list[0].created_at, last_at: list.at(-1).created_at }),
  });
  if (which === "witnessed-fork") {
    // The daemon signs a fork F for this reader (the events shown are in it)
    // while its witnesses cosigned another history H, larger.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    const honest = [leaves[0], await junk(2), await junk(3)];
    const witnessed = await bundle(honest);
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(list),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list, next_after: list.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => witnessed,
    };
  } else if (which === "malformed-event") {
    // Event 2's payload holds a number JSON.parse turns into Infinity.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(list),
      [`/api/plans/${PLAN}/events`]: () => JSON.stringify({ events: list, next_after: list.length }).replace('"payload":{"i":1}', '"payload":{"i":1e400}'),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => bundle(leaves),
    };
  } else if (which === "withheld-tail" || which === "witnessed-ahead") {
    // Three signed events; the daemon shows two. Withheld: its checkpoint
    // says 3. Witnessed ahead: its checkpoint says 2, the witnessed one 3.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    const shown = list.slice(0, 2);
    const current = which === "withheld-tail" ? leaves : leaves.slice(0, 2);
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(current)), ...plan(shown),
      [`/api/plans/${PLAN}/events`]: () => ({ events: shown, next_after: shown.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => bundle(leaves),
    };
  } else if (which === "gap-in-middle") {
    // Four signed events; the daemon shows 1, 2 and 4, each with its proof.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }, { i: 2 }, { i: 3 }]);
    const shown = [list[0], list[1], list[3]];
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(shown),
      [`/api/plans/${PLAN}/events`]: () => ({ events: shown, next_after: 4 }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => bundle(leaves),
    };
  } else if (which === "witness-withheld" || which === "witness-stale") {
    // Witnesses pinned; the daemon (holding the log key) withholds the
    // witnessed bundle (409: not yet recorded), or serves an older one.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(list),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list, next_after: list.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => which === "witness-withheld"
        ? answer({ type: "urn:logbook:problem:not-witnessed", status: 409 }, 409)
        : bundle(leaves.slice(0, 1)),
    };
  } else if (which === "witness-old") {
    // Witnesses pinned, and their quorum cosigned this very checkpoint, but
    // three hours ago: the daemon may be showing an old history.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    const old = await bundle(leaves, undefined, PLAN, false, log, BigInt(Math.floor(Date.now() / 1000) - 3 * 3600));
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(list),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list, next_after: list.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => old,
    };
  } else if (which === "witness-ages") {
    // Green under a quorum that cosigned 9 min 45 s ago; every later bundle
    // request never answers. The page must turn pending on its own as the
    // quorum ages past 10 minutes, although no pass ever finishes again.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    const aging = await bundle(leaves, undefined, PLAN, false, log, BigInt(Math.floor(Date.now() / 1000) - 585));
    let served = false;
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(list),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list, next_after: list.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => (served ? new Promise(() => {}) : ((served = true), aging)),
    };
  } else if (which === "erased-no-record") {
    // Event 2's payload erased, and the system journal out of reach: its
    // redaction cannot be checked.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    const shown = [list[0], { ...list[1], redacted: true, payload: null }];
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(shown),
      [`/api/plans/${PLAN}/events`]: () => ({ events: shown, next_after: shown.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => bundle(leaves),
    };
  } else if (which === "deleted-plan" || which === "broken-then-deleted") {
    // The instance's signed heads log records the plan as deleted, while
    // the daemon still serves its (signed) events.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    const gone = await bundle(leaves, undefined, PLAN, true);
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(list),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list, next_after: list.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => gone,
    };
    if (which === "broken-then-deleted") {
      // Once the page proved the plan broken, the
      // daemon answers 410 for it, with an honest-looking signed deletion,
      // and ends the stream with a 410: the break the page proved must stay.
      let stream = null;
      window.EventSource = class {
        static CLOSED = 2;
        constructor() { this.readyState = 1; this.listeners = {}; stream = this; setTimeout(() => this.onopen?.(), 0); }
        addEventListener(type, f) { this.listeners[type] = f; }
        close() { this.readyState = 2; }
      };
      const watch = setInterval(() => {
        if (document.getElementById("plan-verdict")?.className !== "verdict broken" || !stream) return;
        clearInterval(watch);
        const deleted = () => answer({ title: "Plan deleted", status: 410 }, 410);
        world.routes[`/api/plans/${PLAN}/checkpoint`] = deleted;
        world.routes[`/api/plans/${PLAN}`] = deleted;
        stream.listeners.error?.({ data: JSON.stringify({ title: "Plan deleted", status: 410 }) });
        window.deletedSent = true;
      }, 50);
    }
  } else if (which === "bad-bundle-unwitnessed") {
    // No witness key pinned, and a witnessed bundle whose heads-log proof
    // is for another entry: the instance served what does not check out.
    pinAll([], 1);
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    const bad = { ...(await bundle(leaves)), heads_index: 0 };
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(list),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list, next_after: list.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => bad,
    };
  } else if (which === "rotated-bundle") {
    // An honest daemon whose log key was rotated after the page checked
    // the plan checkpoint (old key): the bundle, signed when asked for,
    // is the new key's. No log key pinned: the served current and retired.
    localStorage.setItem("logbook.pins", JSON.stringify({ witnesses: [], quorum: 1 }));
    const rotated = await newKey(log.name, 0x01);
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    const signed = await bundle(leaves, [], PLAN, false, rotated);
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(list),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list, next_after: list.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: () => signed,
      "/api/v1/log/keys": () => ({ current: { vkey: rotated.vkey }, retired: [{ vkey: log.vkey }] }),
    };
  } else if (which === "redacted-not-true") {
    // `redacted` is not signed: a value that is truthy but not `true` must
    // not hide a payload that was checked.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }]);
    const shown = [list[0], { ...list[1], redacted: 1 }];
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves)), ...plan(shown),
      [`/api/plans/${PLAN}/events`]: () => ({ events: shown, next_after: shown.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => bundle(leaves),
    };
  } else if (which === "witness-stalls") {
    // Events 1-2 shown, witnessed and verified; then event 3 arrives live
    // and the checkpoint covers it, while the witnessed bundle never
    // answers again: the green of the witnessed size 2 must not cover 3.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    let size = 2;
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves.slice(0, size))), ...plan(list.slice(0, 2)),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list.slice(0, 2), next_after: 2 }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => (size === 2 ? bundle(leaves.slice(0, 2)) : new Promise(() => {})),
    };
    onceVerified((stream) => {
      size = 3;
      stream.onmessage({ lastEventId: "3", data: JSON.stringify(list[2]) });
    });
  } else if (which === "live-forgery") {
    // Events 1-2 shown and verified; then the stream (EventSource, replaced
    // here by the attacker too) brings event 3 with another actor, and the
    // checkpoint grows to cover the real event 3.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    let size = 2;
    world.routes = {
      ...planRoutes(PLAN, () => leaves, () => planNote(leaves.slice(0, size))), ...plan(list.slice(0, 2)),
      [`/api/plans/${PLAN}/events`]: () => ({ events: list.slice(0, 2), next_after: 2 }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => bundle(leaves.slice(0, size)),
    };
    onceVerified((stream, verdict) => {
      size = 3;
      stream.onmessage({ lastEventId: "3", data: JSON.stringify({ ...list[2], actor: "mallory" }) });
      window.verdictOnArrival = verdict(); // before any check of event 3
    });
  } else if (which === "forget-restored") {
    // This browser checked size 3; the operator restored the store to size
    // 2. A rollback, until a Forget in another tab: then, without waiting
    // for an event, a first sight, checked and witnessed.
    const { list, leaves } = await events(PLAN, [{ i: 0 }, { i: 1 }, { i: 2 }]);
    const { PlanChecker, forgetSeen, GENERATION } = await import("/ui/assets/check.js");
    world.routes = planRoutes(PLAN, () => leaves, () => planNote(leaves));
    await new PlanChecker(PLAN).refreshCheckpoint();
    const restored = list.slice(0, 2);
    world.routes = {
      ...planRoutes(PLAN, () => leaves.slice(0, 2), () => planNote(leaves.slice(0, 2))), ...plan(restored),
      [`/api/plans/${PLAN}/events`]: () => ({ events: restored, next_after: restored.length }),
      [`/api/plans/${PLAN}/checkpoint?witnessed=1`]: async () => bundle(leaves.slice(0, 2)),
    };
    // What another tab's Forget does here: the storage changes, and an event says so.
    window.forgetInAnotherTab = () => { forgetSeen(); window.dispatchEvent(new StorageEvent("storage", { key: GENERATION })); };
  } else {
    throw new Error(`no case ${which}`);
  }
  const root = document.createElement("div");
  document.body.append(root);
  planView(root, PLAN);
  done("started");
})().catch((e) => done(`error: ${e?.stack || e}`));
