#!/usr/bin/env python3
"""Independent check of docs/vectors/tlog-merkle.json (Python stdlib only).

Also checks the signed checkpoint: the C2SP signed-note layout, the key id
SHA-256(name || 0x0A || 0x01 || key)[:4], the vkey string, and the Ed25519
signature with a small RFC 8032 verifier written here.

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
sys.path.insert(0, str(HERE))
from rfc9162 import leaf, mth, node, path, subproof, verify_consistency, verify_inclusion  # noqa: E402

V = json.loads((HERE / "tlog-merkle.json").read_text())
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        sys.exit(f"FAIL: {what}")


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

# --- Ed25519 verification, RFC 8032 section 5.1.7 (affine arithmetic) ---
P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)


def recover_x(y, sign):
    xx = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    x = pow(xx, (P + 3) // 8, P)
    if (x * x - xx) % P:
        x = x * SQRT_M1 % P
    if (x * x - xx) % P or (x == 0 and sign):
        return None
    return P - x if x & 1 != sign else x


def add(a, b):
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, P - 2, P) % P,
            (y1 * y2 + x1 * x2) * pow(1 - t, P - 2, P) % P)


def mul(k, point):
    acc = (0, 1)
    while k:
        if k & 1:
            acc = add(acc, point)
        point = add(point, point)
        k >>= 1
    return acc


def decode_point(b):
    y = int.from_bytes(b, "little")
    sign, y = y >> 255, y & (2**255 - 1)
    if y >= P:
        return None
    x = recover_x(y, sign)
    return None if x is None else (x, y)


BASE = (recover_x(4 * pow(5, P - 2, P) % P, 0), 4 * pow(5, P - 2, P) % P)


def ed25519_verify(public, message, signature):
    if len(public) != 32 or len(signature) != 64:
        return False
    a, r = decode_point(public), decode_point(signature[:32])
    s = int.from_bytes(signature[32:], "little")
    if a is None or r is None or s >= L:
        return False
    h = int.from_bytes(hashlib.sha512(signature[:32] + public + message).digest(), "little") % L
    return mul(s, BASE) == add(r, mul(h, a))


# --- the signed checkpoint ---
sc = V["signed_checkpoint"]
name, key_id_hex, key_b64 = sc["vkey"].split("+", 2)
key = base64.b64decode(key_b64)
check(key[0] == 1 and len(key) == 33, "vkey holds an Ed25519 key")
key_id = hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]
check(key_id.hex() == key_id_hex, "vkey key id")
note = sc["note"]
check(all(c == "\n" or c >= " " for c in note), "no control characters")
text, sigs = note[: note.rindex("\n\n") + 1], note[note.rindex("\n\n") + 2 :]
check(text == f"{name}\n{V['entry_count']}\n{b64(mth(leaves))}\n", "checkpoint text: origin, size, root")
lines = sigs.rstrip("\n").split("\n")
check(len(lines) == 1 and lines[0].startswith("\u2014 " + name + " "), "one signature line by the origin")
sig = base64.b64decode(lines[0].split(" ")[2])
check(sig[:4] == key_id, "signature key id")
check(ed25519_verify(key[1:], text.encode(), sig[4:]), "Ed25519 signature verifies")
check(not ed25519_verify(key[1:], text.replace("257", "258").encode(), sig[4:]), "tampered text fails")
check(not ed25519_verify(key[1:], text.encode(), sig[4:-1] + bytes([sig[-1] ^ 1])), "tampered signature fails")
print(f"tlog vectors: {checks} checks passed")
