#!/usr/bin/env python3
"""Independent check of the write-ahead segment's frames (wal-segment.json).

Uses only the Python 3 standard library. It builds every frame from the
record's fields as docs/journal-format.md describes journal.wal (length,
SHA-256 over epoch, length and body, then a version byte and postcard:
unsigned varints, raw fixed-size byte arrays, a varint length before byte
strings, strings and sequences, a 0/1 tag before an option), compares it
with the vector, decodes the vector's bytes back into the same fields, and
checks that a flipped byte or another epoch makes the frame fail its
checksum (where replay stops). For the 'segments', it builds each run of
frames, damages it as described, and reads it by the damage rule: a failed
frame the database holds durably is skipped when the next frame that checks
is at most one past the durable position; else kept up to the failed
frame, or refused when a frame of the epoch that checks further on proves
the failed one acknowledged.

    python3 docs/vectors/verify_wal_vectors.py [path/to/wal-segment.json]
    python3 docs/vectors/verify_wal_vectors.py --write   # fill in "hex"
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# The same postcard pieces as the head-row verifier (varints, raw arrays).
from verify_head_vectors import Reader, varint  # noqa: E402

VERSION = 1


def text(s):
    data = s.encode("utf-8")
    return varint(len(data)) + data


def body(r):
    out = bytearray([VERSION])
    out += varint(r["position"])
    out += bytes.fromhex(r["plan_id"])
    out += varint(r["seq"])
    event = bytes.fromhex(r["event"])
    out += varint(len(event)) + event
    if r["idempotency"] is None:
        out.append(0)
    else:
        out.append(1)
        out += text(r["idempotency"]["key"])
        out += bytes.fromhex(r["idempotency"]["fingerprint"])
    out += varint(len(r["outbox"]))
    for peer, message in r["outbox"]:
        out += text(peer) + bytes.fromhex(message)
    return bytes(out)


def checksum(epoch, length, data):
    return hashlib.sha256(epoch + length + data).digest()


def frame(epoch, r):
    data = body(r)
    length = len(data).to_bytes(4, "little")
    return length + checksum(epoch, length, data) + data


def read_text(r):
    return r.raw(r.varint()).decode("utf-8")


def decode(epoch, data):
    """The record of the frame at the start of data, or None if it does not check."""
    if len(data) < 36:
        return None
    length = data[:4]
    size = int.from_bytes(length, "little")
    payload = data[36 : 36 + size]
    if size == 0 or len(payload) != size or data[4:36] != checksum(epoch, length, payload):
        return None
    r = Reader(payload)
    if r.raw(1)[0] != VERSION:
        raise ValueError("unknown record version")
    record = {
        "position": r.varint(),
        "plan_id": r.raw(16).hex(),
        "seq": r.varint(),
        "event": r.raw(r.varint()).hex(),
    }
    tag = r.raw(1)[0]
    if tag == 1:
        record["idempotency"] = {"key": read_text(r), "fingerprint": r.raw(32).hex()}
    elif tag == 0:
        record["idempotency"] = None
    else:
        raise ValueError("bad option tag")
    record["outbox"] = [[read_text(r), r.raw(16).hex()] for _ in range(r.varint())]
    if r.at != len(payload):
        raise ValueError("trailing bytes in the body")
    return record


BATCH = 1024  # the most frames one batch writes


def segment_bytes(epoch, v):
    """The frames a 'segments' vector describes, damage applied."""
    frames = []
    for position in range(v["first"], v["first"] + v["count"]):
        record = {
            "position": position,
            "plan_id": v["plan_id"],
            "seq": position,
            "event": bytes([position % 256] * v["event_len"]).hex(),
            "idempotency": None,
            "outbox": [],
        }
        frames.append(bytearray(frame(epoch, record)))
    for d in v["damage"]:
        frames[d["frame"]][d["byte"]] ^= d["xor"]
    for z in v["zero"]:
        frames[z][:] = bytes(len(frames[z]))
    return b"".join(bytes(f) for f in frames)


def next_checking(epoch, data, failed):
    """The offset and record of the first frame of the epoch that checks after offset failed."""
    for offset in range(failed + 1, len(data)):
        try:
            later = decode(epoch, data[offset:])
        except ValueError:
            later = None
        if later is not None:
            return offset, later
    return None


def read_segment(epoch, data, durable):
    """The reader of docs/journal-format.md: ('refused', None) or ('kept', records)."""
    records, at, skipped = [], 0, False
    while True:
        record = decode(epoch, data[at:])
        if record is None and durable is not None:
            # A failed frame the database holds durably: go on from the next
            # frame that checks if every position before it is held too.
            found = next_checking(epoch, data, at)
            taken = records[-1]["position"] if records else None
            if found is not None:
                offset, later = found
                if (taken is None or later["position"] > taken) and later["position"] <= durable + 1:
                    at, record, skipped = offset, later, True
        if record is None:
            break
        if records and (
            record["position"] <= records[-1]["position"]
            or (record["position"] != records[-1]["position"] + 1 and not skipped)
        ):
            raise ValueError("positions out of order")
        skipped = False
        records.append(record)
        at += 36 + int.from_bytes(data[at : at + 4], "little")
    bounds = []
    if records:
        bounds.append(records[-1]["position"] + 1)
    if durable is not None:
        bounds.append(durable + 1)
    bound = max(bounds) if bounds else None
    # Any frame of the epoch that checks, at any offset after the failed one.
    for offset in range(at + 1, len(data)):
        try:
            later = decode(epoch, data[offset:])
        except ValueError:
            later = None
        if later is None:
            continue
        if bound is None:
            bound = later["position"] - 1
        if later["position"] >= bound + BATCH:
            return "refused", None
    return "kept", records


def main():
    args = [a for a in sys.argv[1:] if a != "--write"]
    path = args[0] if args else os.path.join(os.path.dirname(__file__), "wal-segment.json")
    with open(path) as f:
        vectors = json.load(f)
    epoch = bytes.fromhex(vectors["epoch"])
    failures = 0
    for v in vectors["frames"]:
        built = frame(epoch, v["record"])
        if "--write" in sys.argv:
            v["hex"] = built.hex()
        data = bytes.fromhex(v["hex"])
        ok = built == data and decode(epoch, data) == v["record"]
        other = bytes([epoch[0] ^ 1]) + epoch[1:]
        flipped = data[:-1] + bytes([data[-1] ^ 0x40])
        ok = ok and decode(other, data) is None and decode(epoch, flipped) is None
        print(("ok    " if ok else "FAIL  ") + v["name"])
        failures += not ok
    for v in vectors.get("segments", []):
        outcome, records = read_segment(epoch, segment_bytes(epoch, v), v["durable"])
        expect = v["expect"]
        ok = (outcome == "refused") == expect["refused"] and (
            expect["refused"] or len(records) == expect["records"]
        )
        print(("ok    " if ok else "FAIL  ") + v["name"])
        failures += not ok
    if "--write" in sys.argv:
        with open(path, "w") as f:
            json.dump(vectors, f, indent=2)
            f.write("\n")
    if failures:
        sys.exit(f"{failures} frame vector(s) failed")
    print(
        f"all {len(vectors['frames'])} write-ahead segment frames and "
        f"{len(vectors.get('segments', []))} segments check"
    )


if __name__ == "__main__":
    main()
