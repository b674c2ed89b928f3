#!/usr/bin/env python3
"""Independent check of docs/vectors/plan-log-v1.json (Python stdlib only).

For every event of the positive chains in journal-v1.json it rebuilds the
entry bytes from the event as docs/verifiable-logs.md defines them (the
signed object of docs/journal-format.md plus "signature", as RFC 8785
canonical JSON), then the leaf hash, each plan's root at every size (RFC
9162 MTH), and checks every inclusion and consistency proof in the file
equals PATH / PROOF and verifies, and that tampering fails. JCS comes from
verify_journal_vectors.py, the Merkle code from rfc9162.py; neither shares
code with the Rust implementation.

    python3 docs/vectors/verify_plan_log_vectors.py
"""
import base64
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from rfc9162 import leaf, mth, path, subproof, verify_consistency, verify_inclusion  # noqa: E402
from verify_journal_vectors import jcs, key_ids, sign  # noqa: E402

SIGNED = ["v", "plan_id", "seq", "id", "type", "actor", "created_at", "payload_hash", "prev_hash", "key_id"]
checks = 0


def check(cond, what):
    global checks
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    checks += 1


def entry(event):
    """The entry bytes: the signed object (v = 1) plus its signature."""
    obj = {k: event[k] for k in SIGNED if k != "v"}
    obj["v"] = 1
    obj["signature"] = event["signature"]
    return jcs(obj).encode("utf-8")


journal = json.loads((HERE / "journal-v1.json").read_text(encoding="utf-8"))
vectors = json.loads((HERE / "plan-log-v1.json").read_text(encoding="utf-8"))
check(vectors["format"] == "logbook-plan-log-v1", "format")
unb64 = base64.b64decode

by_plan = {}
for item in journal["events"]:
    by_plan.setdefault(item["event"]["plan_id"], []).append(item["event"])
check(len(vectors["plans"]) == len(by_plan), "one log per plan")

for plan in vectors["plans"]:
    events = sorted(by_plan[plan["plan_id"]], key=lambda e: e["seq"])
    entries = [entry(e) for e in events]
    leaves = [leaf(e) for e in entries]
    check(len(plan["entries"]) == len(events), "one entry per event")
    for i, v in enumerate(plan["entries"]):
        check(v["seq"] == i + 1, "leaf i is seq i + 1")
        check(v["entry"].encode("utf-8") == entries[i], f"entry bytes of seq {i + 1}")
        check(unb64(v["leaf_hash"]) == leaves[i], f"leaf hash of seq {i + 1}")
        check(b'"payload"' not in entries[i], "the payload is committed only through its hash")
    n = len(leaves)
    roots = [unb64(r) for r in plan["roots"]]
    check(len(roots) == n + 1, "a root for every size 0..n")
    for size in range(n + 1):
        check(roots[size] == mth(leaves[:size]), f"root at size {size}")
    for v in plan["inclusion"]:
        i, s = v["leaf_index"], v["tree_size"]
        proof = [unb64(p) for p in v["proof"]]
        check(proof == path(i, leaves[:s]), f"inclusion {i} in {s} is PATH")
        check(verify_inclusion(i, s, leaves[i], proof, roots[s]), f"inclusion {i} in {s} verifies")
        other = leaves[(i + 1) % n]
        check(n == 1 or not verify_inclusion(i, s, other, proof, roots[s]), f"inclusion {i}: other leaf fails")
    for v in plan["consistency"]:
        f, t = v["from"], v["to"]
        proof = [unb64(p) for p in v["proof"]]
        expected = subproof(f, leaves[:t], True) if 0 < f < t else []
        check(proof == expected, f"consistency {f}->{t} is PROOF")
        check(verify_consistency(f, t, roots[f], roots[t], proof), f"consistency {f}->{t} verifies")
        if 0 < f < t:
            check(not verify_consistency(f, t, roots[t], roots[t], proof), f"consistency {f}->{t}: wrong old root fails")

    # A changed event changes its leaf and every later root.
    tampered = dict(events[0], actor="mallory")
    check(leaf(entry(tampered)) != leaves[0], "a changed event changes its leaf")

# A redacted event: served with "payload": null and "redacted": true, it keeps
# its entry, its leaf and its HMAC signature, because both cover the payload
# only through payload_hash. The payload hash is not (cannot be) recomputed.
red = vectors["redacted"]
event = red["event"]
check(event["payload"] is None and event["redacted"] is True, "redacted: payload null, flag true")
original = next(e for e in by_plan[red["plan_id"]] if e["seq"] == red["seq"])
check(red["entry"].encode("utf-8") == entry(event), "redacted: entry bytes from the served event")
check(entry(event) == entry(original), "redacted: entry unchanged by the redaction")
plan = next(p for p in vectors["plans"] if p["plan_id"] == red["plan_id"])
check(red["leaf_hash"] == plan["entries"][red["seq"] - 1]["leaf_hash"], "redacted: same leaf as before")
check(unb64(red["leaf_hash"]) == leaf(entry(event)), "redacted: leaf hash")
keys = [bytes.fromhex(k["key_hex"]) for k in journal["keys"]]
key = next(k for k in keys if event["key_id"] in key_ids(k))
check(sign(key, event) == event["signature"], "redacted: HMAC signature still verifies")
check(sign(key, dict(event, payload_hash="00" * 32)) != event["signature"], "redacted: payload_hash stays signed")

print(f"plan-log vectors: {checks} checks passed")
