#!/usr/bin/env python3
"""Independent check of docs/vectors/tlog-tiles.json (C2SP tlog-tiles).

Python standard library only; shares no code with the Rust implementation.
Checks tile path spelling (3-digit groups, x-prefixed but the last, .p/W
for partial tiles), which tiles exist in a tree of `tree_size` entries,
and the bytes of hash tiles (the RFC 6962 hashes of perfect subtrees of
2^(8L) leaves, 32 bytes each) and entry bundles (each entry as a 2-byte
big-endian length and its bytes). Finally it rebuilds the tree's root from
tiles alone and compares it with the root over the entries.
"""

import base64
import hashlib
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
V = json.load(open(os.path.join(HERE, "tlog-tiles.json")))
checks = 0


def check(cond, what):
    global checks
    if not cond:
        sys.exit(f"tile vectors: FAILED: {what}")
    checks += 1


def leaf(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(leaves):
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node(mth(leaves[:k]), mth(leaves[k:]))


def format_index(n):
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def parse(path):
    """(level or 'entries', index, width or None), or None if not canonical."""
    m = re.fullmatch(r"(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?", path)
    if not m:
        return None
    level = m.group(1) if m.group(1) == "entries" else int(m.group(1))
    index = int(m.group(2).replace("x", "").replace("/", ""))
    width = int(m.group(3)) if m.group(3) else None
    if level != "entries" and level > 63:
        return None
    if width is not None and width > 255:
        return None
    if index >= 2**64 or format_index(index) != m.group(2):
        return None
    return level, index, width


def exists(level, index, width, size):
    height = 0 if level == "entries" else 8 * level
    available = size >> height if height < 64 else 0
    return (index * 256 + (width or 256)) <= available


template = V["entry_template"]
size = V["tree_size"]
entries = [template.replace("{i}", str(i)).encode() for i in range(size)]
leaves = [leaf(e) for e in entries]

for p in V["paths"]:
    got = parse(p["path"])
    check(got == (p["level"], p["index"], p["width"]), f"path {p['path']} parses")
for p in V["refused"]:
    check(parse(p) is None, f"path {p} is refused")

contents = {}
for t in V["present"]:
    level, index, width = parse(t["path"])
    check(exists(level, index, width, size), f"{t['path']} exists at {size}")
    count = width or 256
    body = base64.b64decode(t["content"])
    if level == "entries":
        want = b"".join(len(e).to_bytes(2, "big") + e for e in entries[index * 256 : index * 256 + count])
    else:
        span = 1 << (8 * level)
        want = b"".join(mth(leaves[j * span : (j + 1) * span]) for j in range(index * 256, index * 256 + count))
    check(body == want, f"{t['path']} content")
    contents[t["path"]] = body
for p in V["absent"]:
    level, index, width = parse(p)
    check(not exists(level, index, width, size), f"{p} does not exist at {size}")

# The root at 257 from tiles alone: the level-8 hash of the first 256
# leaves (tile 1/000.p/1), then leaf 256 (tile 0/001.p/1).
top, tail = contents["1/000.p/1"], contents["0/001.p/1"]
check(node(top, tail) == mth(leaves), "root from tiles")
full = contents["0/000"]
check(mth([full[i : i + 32] for i in range(0, len(full), 32)]) == top, "level-0 tile hashes to the level-1 hash")
print(f"tile vectors: {checks} checks passed")
