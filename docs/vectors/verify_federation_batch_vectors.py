#!/usr/bin/env python3
"""Independent check of the signed batch test vectors (capability
batch-signature): docs/vectors/federation-batch-v1.json.

Standard library only. Reuses RFC 8785 (JCS) from verify_journal_vectors.py
and the SPKI reader and RSASSA-PSS-VERIFY (SHA-256, MGF1-SHA-256, 32-byte
salt) from verify_federation_vectors.py.

    python3 docs/vectors/verify_federation_batch_vectors.py [federation-batch-v1.json]

A batch is accepted when: its manifest verifies with the file's key over
JCS(manifest without signature); it lists as many digests as there are
messages; every message has no signature and carries the manifest's
instanceId, recipientId, timestamp and keyId; and the lowercase hex SHA-256
of each message's UTF-8 JCS bytes equals the manifest's entry at its place.
An ack is accepted when it verifies like an EventAck. Prints "N passed,
0 failed" and exits 0 when the valid batch and ack are accepted and every
invalid one refused; else prints the failures and exits 1.
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_journal_vectors import jcs  # noqa: E402
from verify_federation_vectors import signing_input, spki_rsa_key, verify  # noqa: E402

SAME = ("instanceId", "recipientId", "timestamp", "keyId")


def digest(message):
    return hashlib.sha256(jcs(message).encode("utf-8")).hexdigest()


def refusal(key, body):
    """Why the receiver refuses `body`, or None when it accepts it."""
    manifest, messages = body.get("batch"), body.get("messages")
    if sorted(body) != ["batch", "messages"] or not isinstance(manifest, dict) or not isinstance(messages, list):
        return "not {batch, messages}"
    if sorted(manifest) != sorted(["batchId", "instanceId", "recipientId", "timestamp", "keyId", "messages", "signature"]):
        return "manifest members"
    if not verify(key, manifest):
        return "manifest signature"
    if not 1 <= len(messages) <= 1000 or len(messages) != len(manifest["messages"]):
        return "message count"
    for i, (m, listed) in enumerate(zip(messages, manifest["messages"])):
        if not isinstance(m, dict) or "signature" in m:
            return f"message {i} is not an unsigned message"
        if any(m.get(k) != manifest[k] for k in SAME):
            return f"message {i} differs from the manifest"
        if digest(m) != listed:
            return f"message {i} digest"
    return None


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "federation-batch-v1.json")
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f)
    passed, failed = 0, 0

    def check(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print("FAIL:", what)

    key = spki_rsa_key(vectors["key"]["publicKey"])
    fingerprint = hashlib.sha256(key[2]).hexdigest()
    check(key[0].bit_length() == 3072, "the key has 3072 bits")
    check(fingerprint == vectors["key"]["fingerprint"], "fingerprint = SHA-256 of the SPKI DER")
    check(fingerprint[:16] == vectors["key"]["keyId"], "keyId = first 16 hex digits of the fingerprint")
    check(vectors.get("capability") == "batch-signature", "capability is batch-signature")

    body = vectors["batch"]["body"]
    manifest = body["batch"]
    check(signing_input(manifest) == vectors["batch"]["manifestSigningInput"], "manifest signing input")
    check([jcs(m) for m in body["messages"]] == vectors["batch"]["messageSigningInputs"],
          "message signing inputs (the bytes each digest covers)")
    check(manifest["keyId"] == vectors["key"]["keyId"], "the manifest names the file's key")
    check(manifest["recipientId"] not in ("", manifest["instanceId"]), "the manifest names another instance")
    check(refusal(key, body) is None, "the signed batch is accepted: " + str(refusal(key, body)))

    ack = vectors["ack"]["ack"]
    check(signing_input(ack) == vectors["ack"]["signingInput"], "ack signing input")
    check(verify(key, ack), "the BatchAck verifies")
    check(ack["correlationId"] == manifest["batchId"], "the ack names the batch")
    check(ack["recipientId"] == manifest["instanceId"] and ack["instanceId"] == manifest["recipientId"],
          "the ack goes from the batch's recipient back to its sender")
    check(ack["received"] is True and ack["messages"] == [m["messageId"] for m in body["messages"]],
          "the ack lists every messageId, in order")

    for v in vectors["invalidBatches"]:
        check(refusal(key, v["body"]) is not None, v["name"] + " is refused")
    for v in vectors["invalidAcks"]:
        check(not verify(key, v["ack"]), v["name"] + " is refused")
    check(len(vectors["invalidBatches"]) >= 7 and len(vectors["invalidAcks"]) >= 3, "the negative cases are there")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
