#!/usr/bin/env python3
"""Independent check of the logbook federation test vectors (v2, and v1).

Uses only the Python 3 standard library: RFC 8785 (JCS) canonical JSON
(shared with verify_journal_vectors.py), a minimal DER reader for the SPKI
public key, and RSASSA-PSS-VERIFY (RFC 8017 section 8.1.2, EMSA-PSS with
SHA-256, MGF1-SHA-256 and a 32-byte salt) written out with pow().

    python3 docs/vectors/verify_federation_vectors.py [federation-vN.json ...]

Without arguments it checks federation-v2.json (logbook-federation/2) and
federation-v1.json (logbook-federation/1, still accepted behind
accept_protocol_v1) next to this script.

Prints "N passed, 0 failed" and exits 0 when every valid vector verifies
and every invalid one does not, and the federation.key_rotated announcement
(signed with the file's key as the OLD key) carries a well-formed new key,
and, in a v2 file, every valid message and ack names its recipient in a
signed recipientId (and one readdressed after signing is rejected);
otherwise prints the failures and exits 1.
"""

import base64
import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from verify_journal_vectors import jcs  # noqa: E402  (RFC 8785, stdlib only)

SALT_LEN = 32


def der_read(data, pos):
    """Returns (tag, value bytes, next position) of the DER TLV at pos."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return tag, data[pos:pos + length], pos + length


def spki_rsa_key(pem):
    """(n, e, DER) of an RSA SubjectPublicKeyInfo in PEM."""
    lines = [l for l in pem.strip().splitlines() if not l.startswith("-----")]
    der = base64.b64decode("".join(lines))
    tag, spki, _ = der_read(der, 0)
    assert tag == 0x30
    tag, algorithm, pos = der_read(spki, 0)
    assert tag == 0x30
    tag, oid, _ = der_read(algorithm, 0)
    assert tag == 0x06 and oid == bytes.fromhex("2a864886f70d010101"), "not rsaEncryption"
    tag, bits, _ = der_read(spki, pos)
    assert tag == 0x03 and bits[0] == 0
    tag, rsa_key, _ = der_read(bits[1:], 0)
    assert tag == 0x30
    tag, n, pos = der_read(rsa_key, 0)
    assert tag == 0x02
    tag, e, _ = der_read(rsa_key, pos)
    assert tag == 0x02
    return int.from_bytes(n, "big"), int.from_bytes(e, "big"), der


def mgf1(seed, length):
    out = b""
    counter = 0
    while len(out) < length:
        out += hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return out[:length]


def pss_verify(n, e, message, signature):
    """RSASSA-PSS-VERIFY with SHA-256, MGF1-SHA-256, sLen = 32."""
    mod_bits = n.bit_length()
    k = (mod_bits + 7) // 8
    if len(signature) != k:
        return False
    s = int.from_bytes(signature, "big")
    if s >= n:
        return False
    em_bits = mod_bits - 1
    em_len = (em_bits + 7) // 8
    em = pow(s, e, n).to_bytes(em_len, "big")
    m_hash = hashlib.sha256(message).digest()
    h_len = len(m_hash)
    if em_len < h_len + SALT_LEN + 2 or em[-1] != 0xBC:
        return False
    masked_db, h = em[:em_len - h_len - 1], em[em_len - h_len - 1:-1]
    zero_bits = 8 * em_len - em_bits
    if masked_db[0] >> (8 - zero_bits) if zero_bits else 0:
        return False
    db = bytes(a ^ b for a, b in zip(masked_db, mgf1(h, len(masked_db))))
    db = bytes([db[0] & (0xFF >> zero_bits)]) + db[1:]
    ps_len = em_len - h_len - SALT_LEN - 2
    if db[:ps_len] != b"\x00" * ps_len or db[ps_len] != 0x01:
        return False
    salt = db[-SALT_LEN:]
    return hashlib.sha256(b"\x00" * 8 + m_hash + salt).digest() == h


def signing_input(message):
    return jcs({k: v for k, v in message.items() if k != "signature"})


def verify(key, message):
    n, e, _ = key
    try:
        signature = base64.b64decode(message["signature"], validate=True)
    except (KeyError, ValueError):
        return False
    return pss_verify(n, e, signing_input(message).encode("utf-8"), signature)


KEY_ROTATED = "federation.key_rotated"


def check_announcement(check, old_key, v):
    """A key announcement: signed with the OLD key (checked by the caller,
    the file's key), its payload exactly {publicKey, keyId} naming the new
    RSA key (at least 3072 bits) by its keyId, which is not the old one."""
    name = v["name"]
    payload = v["message"]["payload"]
    check(isinstance(payload, dict) and sorted(payload) == ["keyId", "publicKey"],
          name + ": payload is exactly {publicKey, keyId}")
    try:
        new_key = spki_rsa_key(payload["publicKey"])
    except (AssertionError, IndexError, KeyError, TypeError, ValueError):
        check(False, name + ": payload.publicKey is an RSA SPKI PEM")
        return
    fingerprint = hashlib.sha256(new_key[2]).hexdigest()
    check(new_key[0].bit_length() >= 3072, name + ": the new key has at least 3072 bits")
    check(payload["keyId"] == fingerprint[:16], name + ": payload.keyId names payload.publicKey")
    check(fingerprint == v["newKey"]["fingerprint"] and payload["keyId"] == v["newKey"]["keyId"]
          and spki_rsa_key(v["newKey"]["publicKey"])[2] == new_key[2],
          name + ": payload carries newKey")
    check(new_key[2] != old_key[2] and payload["keyId"] != v["message"]["keyId"],
          name + ": the new key is not the signing (old) key")
    check(not verify(new_key, v["message"]), name + ": not signed with the new key")


def check_v2(check, vectors):
    """logbook-federation/2: recipientId is a signed member of every valid
    message and ack (a non-empty instance id, not the sender's own), and
    changing it after signing breaks the signature."""
    check(vectors.get("protocolVersion") == "logbook-federation/2", "the file is logbook-federation/2")
    for v in vectors["valid"]:
        m = v["message"]
        recipient = m.get("recipientId")
        check(isinstance(recipient, str) and recipient != "" and recipient != m.get("instanceId"),
              v["name"] + ": names another instance as recipientId")
        check('"recipientId":' in v["signingInput"], v["name"] + ": recipientId is signed")
    check(any("recipientId" in v["name"] for v in vectors["invalid"]),
          "a readdressed message is among the invalid vectors")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    paths = sys.argv[1:] or [os.path.join(here, "federation-v2.json"), os.path.join(here, "federation-v1.json")]
    passed, failed = 0, 0

    def check(ok, what):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print("FAIL:", what)

    for path in paths:
        with open(path, encoding="utf-8") as f:
            vectors = json.load(f)
        check_file(check, vectors)
        if vectors.get("protocolVersion", "logbook-federation/1") == "logbook-federation/2":
            check_v2(check, vectors)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


def check_file(check, vectors):

    key = spki_rsa_key(vectors["key"]["publicKey"])
    fingerprint = hashlib.sha256(key[2]).hexdigest()
    check(key[0].bit_length() == 3072, "the key has 3072 bits")
    check(fingerprint == vectors["key"]["fingerprint"], "fingerprint = SHA-256 of the SPKI DER")
    check(fingerprint[:16] == vectors["key"]["keyId"], "keyId = first 16 hex digits of the fingerprint")
    for v in vectors["valid"]:
        check(signing_input(v["message"]) == v["signingInput"], "signing input of " + v["name"])
        check(v["message"]["keyId"] == vectors["key"]["keyId"], "keyId of " + v["name"])
        check(verify(key, v["message"]), "signature of " + v["name"] + " verifies")
        if v["message"].get("eventType") == KEY_ROTATED:
            check_announcement(check, key, v)
    check(
        any(v["message"].get("eventType") == KEY_ROTATED for v in vectors["valid"]),
        "a " + KEY_ROTATED + " announcement is among the valid vectors",
    )
    for v in vectors["invalid"]:
        check(not verify(key, v["message"]), v["name"] + " is rejected")


if __name__ == "__main__":
    sys.exit(main())
