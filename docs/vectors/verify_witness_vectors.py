#!/usr/bin/env python3
"""Independent check of docs/vectors/tlog-witness.json (Python stdlib only).

Replays the c2sp.org/tlog-witness add-checkpoint requests against a witness
written here from the spec:
- the body: "old N" (decimal, no leading zeros), at most 63 base64 hash
  lines, an empty line, then the signed checkpoint note;
- 403 unless the log's Ed25519 signature (key id SHA-256(name || 0x0A ||
  0x01 || key)[:4]) verifies; 400 when old > size; 409 with "<size>\\n"
  when old is not the witness's size, or the same size comes with another
  root; 422 unless the RFC 9162 consistency proof verifies (and it must be
  empty from size 0); else 200 with a cosignature/v1 line that verifies
  (type 0x04 key id, u64 timestamp, signature over
  "cosignature/v1\\ntime <t>\\n" + note text), and the state moves;
- logbook's evidence: a checkpoint below the cosigned size (rollback), the
  same size with another root (fork), or a failing proof from the cosigned
  checkpoint (bad_proof; not for that checkpoint itself sent again).

Reuses rfc9162.py (Merkle), the Ed25519 verifier of verify_tlog_vectors.py
and the vkey parser of verify_cosignature_vectors.py (importing them also
runs their own checks).
"""
import base64
import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import verify_tlog_vectors as tlog  # noqa: E402
from rfc9162 import leaf, mth, verify_consistency  # noqa: E402
from verify_cosignature_vectors import parse_vkey  # noqa: E402

V = json.loads((HERE / "tlog-witness.json").read_text())
checks = 0


def check(cond, what):
    global checks
    checks += 1
    if not cond:
        sys.exit(f"FAIL: {what}")


def parse_request(body):
    old_line, rest = body.split("\n", 1)
    m = re.fullmatch(r"old (0|[1-9][0-9]*)", old_line)
    check(m is not None, f"old line {old_line!r}")
    proof = []
    while True:
        line, rest = rest.split("\n", 1)
        if line == "":
            break
        h = base64.b64decode(line, validate=True)
        check(len(h) == 32, "a proof line is one hash")
        proof.append(h)
    check(len(proof) <= 63, "at most 63 proof lines")
    return int(m.group(1)), proof, rest


def split_note(note):
    split = note.rindex("\n\n")
    text, sigs = note[: split + 1], note[split + 2 :]
    lines = []
    for line in sigs.rstrip("\n").split("\n"):
        dash, name, sig = line.split(" ")
        check(dash == "\u2014", "signature lines start with an em dash")
        lines.append((name, base64.b64decode(sig, validate=True)))
    return text, lines


log_name, log_id, log_key = parse_vkey(V["log_vkey"], 0x01)
w_name, w_id, w_key = parse_vkey(V["witness_vkey"], 0x04)
template = V["entry_template"]
leaves = [leaf(template.replace("{i}", str(i)).encode()) for i in range(64)]
ts = V["timestamp"]

latest = None  # (size, root)
for step in V["steps"]:
    what = step["what"]
    old, proof, note = parse_request(step["request"])
    text, sigs = split_note(note)
    origin, size, root_b64 = text.rstrip("\n").split("\n")[:3]
    size, root = int(size), base64.b64decode(root_b64, validate=True)
    check(origin == log_name, f"{what}: the origin is the log's key name")
    signed = any(
        n == log_name and s[:4] == log_id and tlog.ed25519_verify(log_key, text.encode(), s[4:])
        for n, s in sigs
    )
    evidence = None
    if not signed:
        status, response = 403, ""
    else:
        cur = latest[0] if latest else 0
        if latest and size < latest[0]:
            evidence = "rollback"
        elif latest and size == latest[0] and root != latest[1]:
            evidence = "fork"
        if old > size:
            status, response = 400, ""
        elif old != cur or evidence:
            status, response = 409, f"{cur}\n"
        else:
            if latest is None:
                # Trust on first use; an empty tree has only one root.
                ok = not proof and (size > 0 or root == mth([]))
            else:
                ok = verify_consistency(cur, size, latest[1], root, proof)
            if ok:
                status, response = 200, None
                latest = (size, root)
            else:
                status, response = 422, ""
                # The checkpoint already cosigned needs no proof, and one
                # sent with it proves nothing against the log.
                again = latest is not None and (size, root) == latest
                evidence = "bad_proof" if latest and not again else None
    check(step["status"] == status, f"{what}: status {status}")
    check(step["evidence"] == evidence, f"{what}: evidence {evidence}")
    if status == 200:
        # The signed checkpoint is the test log's tree at that size.
        check(root == mth(leaves[:size]), f"{what}: the root is the log's")
        line = step["response"]
        check(line.endswith("\n") and line.count("\n") == 1, f"{what}: one cosignature line")
        dash, name, sig_b64 = line[:-1].split(" ")
        sig = base64.b64decode(sig_b64, validate=True)
        check(dash == "\u2014" and name == w_name, f"{what}: by the witness")
        check(len(sig) == 76 and sig[:4] == w_id, f"{what}: key id, timestamp, signature")
        check(int.from_bytes(sig[4:12], "big") == ts, f"{what}: the timestamp")
        message = f"cosignature/v1\ntime {ts}\n".encode() + text.encode()
        check(tlog.ed25519_verify(w_key, message, sig[12:]), f"{what}: the cosignature verifies")
        # Appended to the note, it reads as one more signature line.
        _, more = split_note(note + line)
        check(len(more) == len(sigs) + 1, f"{what}: the line appends to the note")
    else:
        check(step["response"] == response, f"{what}: body {response!r}")
check(latest is not None and latest[0] == 16, "the witness ends at size 16")
print(f"witness vectors: {checks} checks passed")
