#!/usr/bin/env python3
"""Independent check of docs/vectors/log-checkpoint.json (Python stdlib only).

A plan checkpoint as docs/verifiable-logs.md ("Checkpoints and keys")
describes it:
- the Go signer-key text (skey) holds the seed; the Ed25519 public key is
  derived from it here (RFC 8032) and must be the instance vkey's;
- the instance vkey is named origin_prefix, with the C2SP key id
  SHA-256(name || 0x0A || 0x01 || key)[:4];
- the plan's vkey is the same key under origin_prefix/plan_id, with the id
  recomputed for that name;
- the note's text is the tlog-checkpoint (origin, size, base64 RFC 9162 root
  of the entries), its one signature line is by the plan's key name and id,
  and the Ed25519 signature verifies (tampering fails);
- binding: the instance document's logKeySignature, RSASSA-PSS-SHA256 over
  JCS({instanceId, logKey}), verifies with binding_public_key.

Reuses the Ed25519 verifier and Merkle hash of verify_tlog_vectors.py
(importing it also runs its own checks) and the RSA-PSS verifier of
verify_federation_vectors.py.
"""
import base64
import hashlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import verify_tlog_vectors as tlog  # noqa: E402
from verify_federation_vectors import spki_rsa_key, verify as rsa_verify  # noqa: E402

V = json.loads((HERE / "log-checkpoint.json").read_text())
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        sys.exit(f"FAIL: {what}")


def key_id(name, key):
    return hashlib.sha256(name.encode() + b"\n" + key).digest()[:4]


def parse_vkey(vkey):
    name, kid, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64, validate=True)
    check(len(key) == 33 and key[0] == 1, f"{vkey}: an Ed25519 key")
    check(key_id(name, key).hex() == kid, f"{vkey}: key id matches name and key")
    return name, key[1:]


def public_from_seed(seed):
    """RFC 8032 5.1.5: A = [s]B with s the clamped first half of SHA-512(seed)."""
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    x, y = tlog.mul(a, tlog.BASE)
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


# --- the keys ---
seed = bytes.fromhex(V["seed_hex"])
prefix, skey_id, skey_b64 = V["skey"].removeprefix("PRIVATE+KEY+").split("+", 2)
check(V["skey"].startswith("PRIVATE+KEY+"), "skey in Go's form")
skey = base64.b64decode(skey_b64, validate=True)
check(skey == b"\x01" + seed, "skey holds 0x01 || seed")
public = public_from_seed(seed)
check(skey_id == key_id(prefix, b"\x01" + public).hex(), "skey id is the public key's")

name, instance_key = parse_vkey(V["instance_vkey"])
check(name == V["origin_prefix"] == prefix, "the instance vkey is named origin_prefix")
check(instance_key == public, "the instance vkey is the seed's public key")
plan_name, plan_key = parse_vkey(V["plan_vkey"])
check(plan_name == f"{V['origin_prefix']}/{V['plan_id']}", "the plan vkey is named origin_prefix/plan_id")
check(plan_key == instance_key, "one key serves every plan")
typed = b"\x01" + instance_key
derived = f"{plan_name}+{key_id(plan_name, typed).hex()}+{base64.b64encode(typed).decode()}"
check(derived == V["plan_vkey"], "the plan vkey derives from the instance vkey")

# --- the checkpoint ---
leaves = [tlog.leaf(V["entry_template"].replace("{i}", str(i)).encode()) for i in range(V["size"])]
root = tlog.mth(leaves)
check(base64.b64encode(root).decode() == V["root"], "root is the RFC 9162 root of the entries")
note = V["note"]
split = note.rindex("\n\n")
text, sigs = note[: split + 1], note[split + 2 :]
check(text == f"{plan_name}\n{V['size']}\n{V['root']}\n", "checkpoint text: origin, size, root")
lines = sigs.rstrip("\n").split("\n")
check(sigs.endswith("\n") and len(lines) == 1, "one signature line")
dash, sig_name, sig_b64 = lines[0].split(" ")
check(dash == "\u2014" and sig_name == plan_name, "signed under the plan's key name")
sig = base64.b64decode(sig_b64, validate=True)
check(sig[:4].hex() == V["plan_vkey"].split("+")[1], "signature key id is the plan vkey's")
check(tlog.ed25519_verify(plan_key, text.encode(), sig[4:]), "Ed25519 signature verifies")
check(not tlog.ed25519_verify(plan_key, text.replace("\n5\n", "\n6\n").encode(), sig[4:]), "another size fails")
check(not tlog.ed25519_verify(plan_key, text.encode(), sig[4:-1] + bytes([sig[-1] ^ 1])), "tampered signature fails")
check(sig[:4] != key_id(name, b"\x01" + instance_key), "the instance key id does not vouch for a plan")

# --- the binding in the instance document ---
b = V["binding"]
check(b["logKey"] == V["instance_vkey"] and b["instanceId"] == V["instance_id"], "binding names the instance vkey")
rsa = spki_rsa_key(V["binding_public_key"])
check(rsa_verify(rsa, b), "logKeySignature verifies (RSASSA-PSS-SHA256 over JCS)")
check(not rsa_verify(rsa, dict(b, logKey=V["plan_vkey"])), "another logKey fails")
print(f"checkpoint vectors: {checks} checks passed")
