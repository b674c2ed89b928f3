#!/usr/bin/env python3
"""Independent check of the backup file vectors (backup-mac.json).

Uses only the Python 3 standard library. For every case it reads the three
lines before the store as docs/journal-format.md describes format 2 (the
magic line, the JSON header, the MAC line), checks the header's members and
the store's size and SHA-256, recomputes the key id
(HMAC-SHA256(secret, "logbook key id v2")[:4], hex) and the MAC
(HMAC-SHA256(HMAC-SHA256(secret, "logbook backup mac v1"), magic line ||
header line)), and compares the verdict with the vector's `valid`.

    python3 docs/vectors/verify_backup_vectors.py [path/to/backup-mac.json]
"""

import base64
import hashlib
import hmac
import json
import os
import sys

MAGIC = b"logbook-backup 2\n"
KEY_ID_LABEL = b"logbook key id v2"


def mac_of(secret, label, signed):
    mac_key = hmac.new(secret, label, hashlib.sha256).digest()
    return hmac.new(mac_key, signed, hashlib.sha256).hexdigest()


def check_header(header, store):
    assert set(header) == {"keys", "files", "store"}, header
    assert isinstance(header["keys"], bool)
    if not header["keys"]:
        assert header["files"] == []
    for f in header["files"]:
        assert set(f) == {"path", "content_base64"}, f
        base64.b64decode(f["content_base64"], validate=True)
    assert set(header["store"]) == {"size", "sha256"}
    assert header["store"]["size"] == len(store)


def verdict(case, label):
    secret = case["secret"].encode()
    head = case["head"].encode()
    store = case["store"].encode()
    assert head.startswith(MAGIC), case["name"]
    lines = head[len(MAGIC):].split(b"\n")
    assert len(lines) == 3 and lines[2] == b"", case["name"]
    header_line, mac_line = lines[0], lines[1]
    header = json.loads(header_line)
    mac = json.loads(mac_line)
    assert set(mac) == {"key_id", "hmac_sha256"}, mac
    check_header(header, store)
    key_id = hmac.new(secret, KEY_ID_LABEL, hashlib.sha256).digest()[:4].hex()
    if mac["key_id"] != key_id:
        return False
    expected = mac_of(secret, label, MAGIC + header_line + b"\n")
    mac_ok = hmac.compare_digest(expected, mac["hmac_sha256"])
    # The MAC covers the store through its hash in the header.
    store_ok = hashlib.sha256(store).hexdigest() == header["store"]["sha256"]
    return mac_ok and store_ok


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "backup-mac.json")
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f)
    label = vectors["mac_key_label"].encode()
    assert label == b"logbook backup mac v1"
    valid = refused = 0
    for case in vectors["cases"]:
        got = verdict(case, label)
        if got != case["valid"]:
            print(f"FAIL {case['name']}: verifies={got}, vector says {case['valid']}")
            sys.exit(1)
        valid += got
        refused += not got
    if not valid or not refused:
        print("FAIL: the vectors need both valid and refused cases")
        sys.exit(1)
    print(f"ok: {valid} backup heads verify, {refused} refused as the vectors say")


if __name__ == "__main__":
    main()
