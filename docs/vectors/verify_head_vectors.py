#!/usr/bin/env python3
"""Independent check of the plan head row vectors (head-record.json).

Uses only the Python 3 standard library. It decodes every row's bytes as
docs/journal-format.md describes the `plan_heads` value (a version byte,
then postcard: unsigned varints, zigzag varints for i64, raw 32-byte
arrays, a varint count before a sequence), compares the fields with the
vector, re-encodes them, and checks that each refused row breaks a rule
(an unknown version, or a buffer that does not end at `last_seq` or holds
32 or more leaves).

    python3 docs/vectors/verify_head_vectors.py [path/to/head-record.json]
"""

import json
import os
import sys

FLUSH_LEAVES = 32


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def zigzag(n):
    return (n << 1) ^ (n >> 63)


def encode(row):
    h = row["head"]
    out = bytearray([row["version"]])
    out += varint(h["last_seq"])
    out += bytes.fromhex(h["last_signature"])
    out += varint(h["count"])
    out += varint(zigzag(h["first_at"]))
    out += varint(zigzag(h["last_at"]))
    if row["version"] == 2:
        out += varint(row["flushed"])
        out += varint(len(row["pending"]))
        for leaf in row["pending"]:
            out += bytes.fromhex(leaf)
    return bytes(out)


class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def varint(self):
        n, shift = 0, 0
        while True:
            if self.at >= len(self.data) or shift > 63:
                raise ValueError("truncated or overlong varint")
            byte = self.data[self.at]
            self.at += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return n

    def i64(self):
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def raw(self, size):
        if self.at + size > len(self.data):
            raise ValueError("truncated")
        out = self.data[self.at : self.at + size]
        self.at += size
        return out


def decode(data):
    """The row's fields, or ValueError for a row a reader must refuse."""
    if not data:
        raise ValueError("empty row")
    version, r = data[0], Reader(data[1:])
    if version not in (1, 2):
        raise ValueError(f"unknown version {version}")
    head = {
        "last_seq": r.varint(),
        "last_signature": r.raw(32).hex(),
        "count": r.varint(),
        "first_at": r.i64(),
        "last_at": r.i64(),
    }
    row = {"version": version, "head": head}
    if version == 2:
        row["flushed"] = r.varint()
        row["pending"] = [r.raw(32).hex() for _ in range(r.varint())]
        if len(row["pending"]) >= FLUSH_LEAVES:
            raise ValueError("a full buffer is flushed, never stored")
        if row["flushed"] + len(row["pending"]) != head["last_seq"]:
            raise ValueError("the buffer does not end at last_seq")
    if r.at != len(r.data):
        raise ValueError("trailing bytes")
    return row


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "head-record.json")
    with open(path) as f:
        vectors = json.load(f)
    passed = failed = 0
    for row in vectors["rows"]:
        data = bytes.fromhex(row["hex"])
        want = {k: row[k] for k in ("version", "head", "flushed", "pending") if k in row}
        try:
            got = decode(data)
        except ValueError as e:
            got = f"refused: {e}"
        if got == want and encode(want) == data:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {row['name']}: decoded {got}, want {want}")
    for row in vectors["refused"]:
        try:
            decode(bytes.fromhex(row["hex"]))
            failed += 1
            print(f"FAIL refused {row['name']}: it decoded")
        except ValueError:
            passed += 1
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
