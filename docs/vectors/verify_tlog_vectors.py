#!/usr/bin/env python3
"""Independent check of docs/vectors/tlog-merkle.json (Python stdlib only).

Recomputes every root from the entries with RFC 9162 MTH, regenerates every
inclusion (PATH) and consistency (PROOF) proof from the RFC's recursive
definitions, checks they equal the vectors, and verifies each with the RFC's
verification algorithms (sections 2.1.3.2 and 2.1.4.2), including
mutations that must fail. Shares no code with the Rust implementation.
"""
import base64
import hashlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
V = json.loads((HERE / "tlog-merkle.json").read_text())
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        sys.exit(f"FAIL: {what}")


def leaf(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def k_of(n):  # largest power of two strictly less than n
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def mth(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = k_of(len(leaves))
    return node(mth(leaves[:k]), mth(leaves[k:]))


def path(m, leaves):
    if len(leaves) <= 1:
        return []
    k = k_of(len(leaves))
    if m < k:
        return path(m, leaves[:k]) + [mth(leaves[k:])]
    return path(m - k, leaves[k:]) + [mth(leaves[:k])]


def subproof(m, leaves, whole):
    n = len(leaves)
    if m == n:
        return [] if whole else [mth(leaves)]
    k = k_of(n)
    if m <= k:
        return subproof(m, leaves[:k], whole) + [mth(leaves[k:])]
    return subproof(m - k, leaves[k:], False) + [mth(leaves[:k])]


def verify_inclusion(index, size, h, proof, root):
    if index >= size:
        return False
    fn, sn, r = index, size - 1, h
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_hash, second_hash, proof):
    if first == second:
        return not proof and first_hash == second_hash
    if first == 0:
        return not proof
    if not proof:
        return False
    if first & (first - 1) == 0:
        proof = [first_hash] + proof
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node(c, fr)
            sr = node(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_hash and sr == second_hash and sn == 0


b64 = lambda h: base64.b64encode(h).decode()
unb64 = base64.b64decode
template = V["entry_template"]
leaves = [leaf(template.replace("{i}", str(i)).encode()) for i in range(V["entry_count"])]
check(V["leaf_hash_0"] == b64(leaves[0]), "leaf hash of entry 0")
roots = {}
for r in V["roots"]:
    roots[r["size"]] = unb64(r["root"])
    check(b64(mth(leaves[: r["size"]])) == r["root"], f"root at size {r['size']}")
for v in V["inclusion"]:
    i, s, proof = v["index"], v["size"], [unb64(p) for p in v["proof"]]
    check(proof == path(i, leaves[:s]), f"inclusion proof {i} in {s} is PATH")
    root = mth(leaves[:s])
    check(verify_inclusion(i, s, leaves[i], proof, root), f"inclusion {i} in {s} verifies")
    other = leaves[(i + 1) % len(leaves)]
    check(not verify_inclusion(i, s, other, proof, root), f"inclusion {i} in {s}: other leaf fails")
    if proof:
        check(not verify_inclusion(i, s, leaves[i], proof[:-1], root), f"inclusion {i} in {s}: short proof fails")
for v in V["consistency"]:
    f, t, proof = v["from"], v["to"], [unb64(p) for p in v["proof"]]
    expected = subproof(f, leaves[:t], True) if 0 < f < t else []
    check(proof == expected, f"consistency {f}->{t} is PROOF")
    fr, tr = mth(leaves[:f]), mth(leaves[:t])
    check(verify_consistency(f, t, fr, tr, proof), f"consistency {f}->{t} verifies")
    if 0 < f < t:
        check(not verify_consistency(f, t, tr, tr, proof), f"consistency {f}->{t}: wrong old root fails")
        bad = [node(proof[0], proof[0])] + proof[1:]
        check(not verify_consistency(f, t, fr, tr, bad), f"consistency {f}->{t}: altered proof fails")
print(f"tlog Merkle vectors: {checks} checks passed")
