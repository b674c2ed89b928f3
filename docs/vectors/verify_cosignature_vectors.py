#!/usr/bin/env python3
"""Independent check of docs/vectors/tlog-cosignature.json (Python stdlib only).

c2sp.org/tlog-cosignature, cosignature/v1 with Ed25519:
- the witness vkey is <name>+<id>+base64(0x04 || public key), the public key
  derived here from the seed (RFC 8032), the id
  SHA-256(name || 0x0A || 0x04 || key)[:4];
- the signed message is "cosignature/v1\\ntime <secs>\\n" followed by the
  checkpoint note text;
- the cosignature line is "— <name> base64(id || u64 BE timestamp || sig)",
  the Ed25519 signature verifies over that message (tampering fails);
- the cosigned note is the log's note with that line appended, and the
  log's own signature still verifies.

Reuses the Ed25519 verifier of verify_tlog_vectors.py and the key helpers of
verify_checkpoint_vectors.py (importing them also runs their own checks).
"""
import base64
import hashlib
import json
import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import verify_tlog_vectors as tlog  # noqa: E402
from verify_checkpoint_vectors import public_from_seed  # noqa: E402

V = json.loads((HERE / "tlog-cosignature.json").read_text())
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        sys.exit(f"FAIL: {what}")


def parse_vkey(vkey, alg):
    name, kid, key_b64 = vkey.split("+", 2)
    key = base64.b64decode(key_b64, validate=True)
    check(len(key) == 33 and key[0] == alg, f"{vkey}: an Ed25519 key of type {alg:#04x}")
    check(hashlib.sha256(name.encode() + b"\n" + key).digest()[:4].hex() == kid, f"{vkey}: key id")
    return name, bytes.fromhex(kid), key[1:]


def split_note(note):
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    check(sigs.endswith("\n"), "signature lines end in a newline")
    lines = []
    for line in sigs[:-1].split("\n"):
        dash, name, sig = line.split(" ")
        check(dash == "\u2014", "a signature line starts with an em dash")
        lines.append((name, base64.b64decode(sig, validate=True)))
    return text, lines


# --- the keys ---
w_name, w_id, w_key = parse_vkey(V["witness_vkey"], 0x04)
check(w_name == V["witness_name"], "the witness vkey carries the witness name")
check(w_key == public_from_seed(bytes.fromhex(V["witness_seed_hex"])), "the witness vkey is the seed's key")
check(hashlib.sha256(w_name.encode() + b"\n\x01" + w_key).digest()[:4] != w_id, "type 0x04, not 0x01")
log_name, log_id, log_key = parse_vkey(V["log_vkey"], 0x01)

# --- the log's checkpoint ---
text, lines = split_note(V["checkpoint_note"])
check(text.split("\n")[0] == log_name, "the checkpoint origin is the log key name")
check(len(lines) == 1 and lines[0][0] == log_name and lines[0][1][:4] == log_id, "one line by the log")
check(tlog.ed25519_verify(log_key, text.encode(), lines[0][1][4:]), "the log signature verifies")

# --- the cosignature ---
ts = V["timestamp"]
check(0 <= ts < 2**63, "timestamp within 2^63 - 1")
message = f"cosignature/v1\ntime {ts}\n".encode() + text.encode()
check(V["signed_message"].encode() == message, "the signed message is header, time line, note text")
line = V["cosignature_line"]
check(line.endswith("\n"), "the line ends in a newline")
dash, name, sig_b64 = line[:-1].split(" ")
sig = base64.b64decode(sig_b64, validate=True)
check(dash == "\u2014" and name == w_name, "signed under the witness name")
check(len(sig) == 4 + 8 + 64, "key id, timestamp, Ed25519 signature")
check(sig[:4] == w_id, "the key id is the witness vkey's")
check(int.from_bytes(sig[4:12], "big") == ts, "the timestamp is big-endian")
check(tlog.ed25519_verify(w_key, message, sig[12:]), "the cosignature verifies")
check(not tlog.ed25519_verify(w_key, text.encode(), sig[12:]), "the plain text (no header) fails")
later = f"cosignature/v1\ntime {ts + 1}\n".encode() + text.encode()
check(not tlog.ed25519_verify(w_key, later, sig[12:]), "another timestamp fails")
other = message.replace(b"\n20852163\n", b"\n20852164\n")
check(other != message and not tlog.ed25519_verify(w_key, other, sig[12:]), "another size fails")
check(not tlog.ed25519_verify(w_key, message, sig[12:-1] + bytes([sig[-1] ^ 1])), "a flipped bit fails")

# --- the cosigned note ---
check(V["cosigned_note"] == V["checkpoint_note"] + line, "the cosignature is appended to the log's note")
text2, lines2 = split_note(V["cosigned_note"])
check(text2 == text and len(lines2) == 2, "same text, two signatures")
check(tlog.ed25519_verify(log_key, text2.encode(), lines2[0][1][4:]), "the log signature still verifies")
print(f"cosignature vectors: {checks} checks passed")
