#!/usr/bin/env python3
"""Independent check of docs/vectors/heads-log-v1.json (Python stdlib only).

The heads log and the witnessed bundle as docs/verifiable-logs.md
("Witnessing") describes them:
- entry i is UTF-8(JCS({"plan_id", "size", "root"})), root in base64, with
  "deleted": true for a deletion; leaves and roots are RFC 9162;
- every inclusion proof is PATH and verifies; another leaf fails;
- the instance vkey is the log seed's key named origin_prefix; the heads
  checkpoint's origin is origin_prefix and its first line verifies;
- the witness line is cosignature/v1: key id SHA-256(name || 0x0A || 0x04
  || key)[:4], then a big-endian u64 timestamp and an Ed25519 signature over
  "cosignature/v1\\ntime T\\n" + the checkpoint text;
- the bundle: its plan checkpoint verifies with the plan key derived from
  the instance vkey (same key, name origin_prefix/plan_id), its entry is
  recomputed from that checkpoint, and it is included at heads_index in
  the heads checkpoint's tree; later_entries are every entry after it,
  none records the plan, and with the subtrees left of the entry on its
  inclusion path they rebuild the heads root (MTH's recursive definition);
  tampering with any part fails, and stale_bundle (an older entry of the
  plan in the same tree) is refused.

JCS comes from verify_journal_vectors.py, Merkle code from rfc9162.py,
Ed25519 from verify_tlog_vectors.py and the key derivation from
verify_checkpoint_vectors.py; none shares code with the Rust side.

    python3 docs/vectors/verify_heads_log_vectors.py
"""
import base64
import hashlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import verify_tlog_vectors as tlog  # noqa: E402
from rfc9162 import k_of, leaf, mth, node, path, verify_inclusion  # noqa: E402
from verify_checkpoint_vectors import public_from_seed  # noqa: E402
from verify_journal_vectors import jcs  # noqa: E402

V = json.loads((HERE / "heads-log-v1.json").read_text(encoding="utf-8"))
unb64 = base64.b64decode
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        sys.exit(f"FAIL: {what}")


def key_id(name, alg, key):
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + key).digest()[:4]


def parse_vkey(vkey, alg):
    name, kid, key_b64 = vkey.split("+", 2)
    key = unb64(key_b64)
    check(len(key) == 33 and key[0] == alg, f"{vkey}: key type {alg:#04x}")
    check(key_id(name, alg, key[1:]).hex() == kid, f"{vkey}: key id")
    return name, key[1:]


def split_note(note):
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    check(sigs.endswith("\n"), "signature lines end in a newline")
    lines = []
    for line in sigs[:-1].split("\n"):
        dash, name, sig = line.split(" ")
        check(dash == "\u2014", "a signature line starts with an em dash")
        lines.append((name, unb64(sig)))
    return text, lines


def signed_by(text, lines, name, key, alg):
    """Whether a line by (name, key) verifies: a log signature (0x01) or a cosignature (0x04)."""
    kid = key_id(name, alg, key)
    for n, sig in lines:
        if n != name or sig[:4] != kid:
            continue
        if alg == 0x01:
            return tlog.ed25519_verify(key, text.encode(), sig[4:])
        ts = int.from_bytes(sig[4:12], "big")
        message = f"cosignature/v1\ntime {ts}\n".encode() + text.encode()
        return len(sig) == 4 + 8 + 64 and ts < 2**63 and tlog.ed25519_verify(key, message, sig[12:])
    return False


def entry(plan_id, size, root, deleted):
    obj = {"plan_id": plan_id, "size": size, "root": root}
    if deleted:
        obj["deleted"] = True
    return jcs(obj).encode("utf-8")


check(V["format"] == "logbook-heads-log-v1", "format")

# --- entries, roots, proofs ---
entries = [entry(h["plan_id"], h["size"], h["root"], h["deleted"]) for h in V["heads"]]
check(len(entries) == len(V["entries"]), "one entry per recorded head")
leaves = [leaf(e) for e in entries]
for i, v in enumerate(V["entries"]):
    check(v["entry"].encode("utf-8") == entries[i], f"entry {i} is the JCS of its head")
    check(unb64(v["leaf_hash"]) == leaves[i], f"leaf hash {i}")
check(b'"deleted":true' in entries[-1] and b"deleted" not in entries[0], "deleted only on a deletion")
n = len(leaves)
roots = [unb64(r) for r in V["roots"]]
for size in range(n + 1):
    check(roots[size] == mth(leaves[:size]), f"root at size {size}")
for v in V["inclusion"]:
    i, s = v["leaf_index"], v["tree_size"]
    proof = [unb64(p) for p in v["proof"]]
    check(proof == path(i, leaves[:s]), f"inclusion {i} in {s} is PATH")
    check(verify_inclusion(i, s, leaves[i], proof, roots[s]), f"inclusion {i} verifies")
    check(not verify_inclusion(i, s, leaves[(i + 1) % n], proof, roots[s]), f"inclusion {i}: other leaf fails")

# --- keys ---
prefix = V["origin_prefix"]
name, log_key = parse_vkey(V["instance_vkey"], 0x01)
check(name == prefix, "the instance vkey is named origin_prefix")
check(log_key == public_from_seed(bytes.fromhex(V["log_seed_hex"])), "the instance vkey is the log seed's key")
w_name, w_key = parse_vkey(V["witness_vkey"], 0x04)
check(w_key == public_from_seed(bytes.fromhex(V["witness_seed_hex"])), "the witness vkey is its seed's key")


# --- the bundle ---
def path_ranges(m, lo, hi):
    """PATH(m, D[lo:hi]) of RFC 9162 2.1.3.1 as the leaf ranges its hashes cover, leaf to root."""
    n = hi - lo
    if n <= 1:
        return []
    k = k_of(n)
    if m < k:
        return path_ranges(m, lo, lo + k) + [(lo + k, hi)]
    return path_ranges(m - k, lo + k, hi) + [(lo, lo + k)]


def root_from_suffix(index, size, proof, suffix):
    """MTH(D[0:size]) from D[index:size] (leaf hashes) and, for the leaves
    before index, the path's hashes of the ranges left of it; None if the
    path does not cover them."""
    ranges = path_ranges(index, 0, size)
    if len(ranges) != len(proof) or len(suffix) != size - index:
        return None
    known = {r: h for r, h in zip(ranges, proof) if r[1] <= index}

    def mth_range(lo, hi):
        if (lo, hi) in known:
            return known[(lo, hi)]
        if hi - lo == 1:
            if lo < index:
                raise ValueError("a leaf before the entry is not covered")
            return suffix[lo - index]
        k = k_of(hi - lo)
        return node(mth_range(lo, lo + k), mth_range(lo + k, hi))

    try:
        return mth_range(0, size)
    except ValueError:
        return None


def entry_plan(text):
    """The plan an exact heads entry records, else None."""
    try:
        e = json.loads(text)
        if set(e) - {"plan_id", "size", "root", "deleted"} or e.get("deleted", True) is not True:
            return None
        if entry(e["plan_id"], e["size"], e["root"], e.get("deleted", False)) != text.encode("utf-8"):
            return None
        return e["plan_id"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def bundle_ok(b):
    heads_text, heads_lines = split_note(b["heads_checkpoint"])
    origin, size, root = heads_text.split("\n")[:3]
    if origin != prefix or not signed_by(heads_text, heads_lines, prefix, log_key, 0x01):
        return False
    plan_name = f"{prefix}/{b['plan_id']}"
    plan_text, plan_lines = split_note(b["plan_checkpoint"])
    p_origin, p_size, p_root = plan_text.split("\n")[:3]
    if p_origin != plan_name or not signed_by(plan_text, plan_lines, plan_name, log_key, 0x01):
        return False
    e = b["heads_entry"].encode("utf-8")
    if e not in (entry(b["plan_id"], int(p_size), p_root, d) for d in (False, True)):
        return False
    proof = [unb64(p) for p in b["inclusion_proof"]]
    if not verify_inclusion(b["heads_index"], int(size), leaf(e), proof, unb64(root)):
        return False
    later = b.get("later_entries")
    if not isinstance(later, list) or len(later) != int(size) - b["heads_index"] - 1:
        return False
    if any(entry_plan(t) in (None, b["plan_id"]) for t in later):
        return False
    suffix = [leaf(e)] + [leaf(t.encode("utf-8")) for t in later]
    if root_from_suffix(b["heads_index"], int(size), proof, suffix) != unb64(root):
        return False
    return signed_by(heads_text, heads_lines, w_name, w_key, 0x04)


B = V["bundle"]


def flip_last_signature(note):
    """The note with the last byte of its last signature line changed."""
    head, last = note[:-1].rsplit("\n", 1)
    dash, name, sig = last.split(" ")
    raw = bytearray(unb64(sig))
    raw[-1] ^= 1
    return f"{head}\n{dash} {name} {base64.b64encode(bytes(raw)).decode()}\n"


check(bundle_ok(B), "the bundle verifies: log signatures, entry, inclusion, cosignature")
S = V["stale_bundle"]
check(not bundle_ok(S), "an older entry of the plan in the same tree is refused")
check(entry_plan(S["later_entries"][1]) == S["plan_id"], "stale_bundle: a later entry records the plan again")
unchecked = dict(S)
unchecked["later_entries"] = [t for t in S["later_entries"] if entry_plan(t) != S["plan_id"]]
check(not bundle_ok(unchecked), "stale_bundle: its plan's later entry left out does not rebuild the root")
for i in range(len(V["entries"])):
    leaves_all = [leaf(x) for x in entries]
    p = path(i, leaves_all)
    check(root_from_suffix(i, len(entries), p, leaves_all[i:]) == roots[-1], f"entries from {i} rebuild the root")
    if i + 1 < len(entries):
        check(root_from_suffix(i, len(entries), p, leaves_all[i:-1] + [leaves_all[i]]) != roots[-1], f"a changed suffix from {i} does not")

heads_text, _ = split_note(B["heads_checkpoint"])
check(heads_text.split("\n")[2] == V["roots"][-1], "the heads checkpoint signs the last root")
for what, key, value in [
    ("another index", "heads_index", B["heads_index"] + 1),
    ("another entry", "heads_entry", B["heads_entry"].replace('"size":7', '"size":8')),
    ("another plan", "plan_id", "00000000-0000-0000-0000-00000000000c"),
    ("a changed cosignature", "heads_checkpoint", flip_last_signature(B["heads_checkpoint"])),
    ("a changed size", "heads_checkpoint", B["heads_checkpoint"].replace("\n5\n", "\n6\n", 1)),
    ("a later entry left out", "later_entries", B["later_entries"][:-1]),
    ("a later entry changed", "later_entries", [B["later_entries"][0].replace('"size":1', '"size":2')] + B["later_entries"][1:]),
    ("no later entries", "later_entries", None),
]:
    forged = dict(B)
    forged[key] = value
    check(not bundle_ok(forged), f"{what} fails")

print(f"heads-log-v1.json: {checks} checks passed")
