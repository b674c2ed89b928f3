#!/usr/bin/env python3
"""Independent check of the logbook journal v1 test vectors.

Uses only the Python 3 standard library. It implements RFC 8785 (JCS)
canonical JSON itself, recomputes every key id, canonical payload,
payload_hash, signing input and signature in journal-v1.json from the
inputs, verifies both chains, and runs the chain verifier described in
docs/journal-format.md over every negative vector.

    python3 docs/vectors/verify_journal_vectors.py [path/to/journal-v1.json]

Prints "N passed, 0 failed" and exits 0 when everything matches; any
mismatch is printed and the exit status is 1.
"""

import hashlib
import hmac
import json
import math
import os
import re
import sys

MAX_SAFE_INTEGER = 2**53 - 1
TYPE_RE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
HEX64_RE = re.compile(r"[0-9a-f]{64}")


# ---------------------------------------------------------------- RFC 8785


def jcs(value):
    """The RFC 8785 canonical JSON text of a parsed JSON value."""
    out = []
    _jcs(value, out)
    return "".join(out)


def _jcs(value, out):
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(jcs_string(value))
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            # An IEEE double cannot hold it exactly; logbook refuses it (422).
            raise ValueError(f"integer {value} is outside +-(2^53-1)")
        out.append(es6_number(float(value)))
    elif isinstance(value, float):
        out.append(es6_number(value))
    elif isinstance(value, list):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _jcs(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        # Members sorted by their names' UTF-16 code units. Big-endian UTF-16
        # bytes compare exactly like the code unit sequences.
        names = sorted(value, key=lambda name: name.encode("utf-16-be", "surrogatepass"))
        for i, name in enumerate(names):
            if i:
                out.append(",")
            out.append(jcs_string(name))
            out.append(":")
            _jcs(value[name], out)
        out.append("}")
    else:
        raise TypeError(f"not a JSON value: {value!r}")


_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def jcs_string(text):
    """RFC 8785 section 3.2.2.2: escape only '"', '\\' and U+0000..U+001F."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            raise ValueError("lone surrogate in string")
        if ch in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[ch])
        elif code < 0x20:
            out.append("\\u%04x" % code)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def es6_number(x):
    """ECMAScript Number::toString(x) for a finite double (RFC 8785 3.2.2.3)."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError("NaN and infinities are not JSON")
    if x == 0:
        return "0"  # also for -0
    sign = "-" if x < 0 else ""
    # repr() gives the shortest digit string that round-trips (as ES6 asks).
    mantissa, _, exp = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    leading_zeros = len(all_digits) - len(all_digits.lstrip("0"))
    # ES6's k and n: the value is 0.<digits> * 10^n with k significant digits.
    digits = all_digits.strip("0")
    n = len(int_part) - leading_zeros + int(exp or 0)
    k = len(digits)
    if k <= n <= 21:
        text = digits + "0" * (n - k)
    elif 0 < n <= 21:
        text = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        text = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exponent = ("+" if e >= 0 else "-") + str(abs(e))
        text = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + exponent
    return sign + text


# ------------------------------------------------------------- the format


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def key_id(key):
    """The first 8 hex digits of HMAC-SHA256(key, "logbook key id v2")."""
    return hmac.new(key, b"logbook key id v2", hashlib.sha256).hexdigest()[:8]


def legacy_key_id(key):
    """The id events written before the current key_id carry: SHA-256(key)[:8]."""
    return sha256_hex(key)[:8]


def key_ids(key):
    """Both ids a keyring must answer to for one key."""
    return [key_id(key), legacy_key_id(key)]


def signing_input(event):
    """The canonical JSON the HMAC covers: every field but payload and signature."""
    return jcs(
        {
            "v": 1,
            "plan_id": event["plan_id"],
            "seq": event["seq"],
            "id": event["id"],
            "type": event["type"],
            "actor": event["actor"],
            "created_at": event["created_at"],
            "payload_hash": event["payload_hash"],
            "prev_hash": event["prev_hash"],
            "key_id": event["key_id"],
        }
    )


def sign(key, event):
    return hmac.new(key, signing_input(event).encode("utf-8"), hashlib.sha256).hexdigest()


def _no_duplicates(pairs):
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError("duplicate member name")
    return dict(pairs)


def is_canonical(text):
    """True when a payload's text is exactly JCS(parse(text)) and repeats no
    member name at any depth (the first implies the second; both are
    checked so that the reason is plain)."""
    try:
        # Every JSON number is a double to JCS: the canonical text of 1e20 is
        # the integer literal 100000000000000000000.
        payload = json.loads(text, object_pairs_hook=_no_duplicates, parse_int=float)
        return jcs(payload) == text
    except (ValueError, TypeError):
        return False


def split_events(text):
    """Parses the JSON text of an array of events. Returns (event,
    payload_text) pairs, payload_text being the exact text of the event's
    `payload` member: the text a verifier must check, which json.loads
    alone would not keep."""
    decoder = json.JSONDecoder()

    def skip(i):
        while text[i] in " \t\n\r":
            i += 1
        return i

    def expect(i, char):
        i = skip(i)
        if text[i] != char:
            raise ValueError(f"expected {char!r} at offset {i}")
        return i + 1

    out = []
    i = expect(0, "[")
    while text[skip(i)] != "]":
        i = expect(i, "{")
        event, payload_text = {}, None
        while True:
            name, i = decoder.raw_decode(text, skip(i))
            i = expect(i, ":")
            start = skip(i)
            value, i = decoder.raw_decode(text, start)
            if name in event:
                raise ValueError(f"an event repeats the member {name!r}")
            event[name] = value
            if name == "payload":
                payload_text = text[start:i]
            if text[skip(i)] != ",":
                break
            i = skip(i) + 1
        i = expect(i, "}")
        out.append((event, payload_text))
        if text[skip(i)] == ",":
            i = skip(i) + 1
    return out


def verify_chain(events, keys, retired=None):
    """Checks one plan's events in the order given, as docs/journal-format.md
    describes. `events` are (event, payload_text) pairs; `retired` maps a
    key (its bytes) to the time it was retired, when the verifier knows it.
    Returns (chain_valid, broken_at, broken_reason)."""
    retired = retired or {}
    next_seq, prev_signature, latest = 1, None, None
    for event, payload_text in events:
        if event["seq"] != next_seq:
            return False, event["seq"], "seq_gap"
        if not is_canonical(payload_text):
            return False, event["seq"], "payload_not_canonical"
        payload_hash = sha256_hex(payload_text.encode("utf-8"))
        if payload_hash != event["payload_hash"]:
            return False, event["seq"], "payload_hash"
        if event["prev_hash"] != prev_signature:
            return False, event["seq"], "prev_hash"
        # Times have one fixed spelling, so they compare as strings.
        date = max(latest or event["created_at"], event["created_at"])
        key = keys.get(event["key_id"])
        if key is None and re.fullmatch(r"[0-9a-f]{8}", event["key_id"]):
            return False, event["seq"], "missing-key"
        if key is None or (key in retired and date > retired[key]) or not hmac.compare_digest(
            sign(key, event), event["signature"]
        ):
            return False, event["seq"], "signature"
        next_seq += 1
        prev_signature = event["signature"]
        latest = date
    return True, None, None


# ----------------------------------------------------------------- checks


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def eq(self, what, actual, expected):
        if actual == expected:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL {what}:\n  expected {expected!r}\n  actual   {actual!r}")

    def true(self, what, condition):
        self.eq(what, bool(condition), True)


def check_jcs_self_test(c):
    """Spot checks of the canonicalizer that do not depend on the file."""
    for x, text in [
        (0.0, "0"), (-0.0, "0"), (1.0, "1"), (-1.5, "-1.5"), (0.1, "0.1"),
        (1e21, "1e+21"), (1e20, "100000000000000000000"), (123e18, "123000000000000000000"),
        (1e-6, "0.000001"), (1e-7, "1e-7"), (1.5e-7, "1.5e-7"), (2.5e-5, "0.000025"),
        (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e+308"),
        (9007199254740991.0, "9007199254740991"), (333333333.33333329, "333333333.3333333"),
        (1e23, "1e+23"), (4.35, "4.35"), (0.000001234, "0.000001234"),
    ]:
        c.eq(f"es6_number({x!r})", es6_number(x), text)
    c.eq("jcs key order", jcs({"\ue000": 1, "\U0001f600": 2, "a": 3, "": 4, "\u00e9": 5}),
         '{"":4,"a":3,"\u00e9":5,"\U0001f600":2,"\ue000":1}')
    c.eq("jcs escapes", jcs("\u0000\u001f\u007f\u2028\"\\/"), '"\\u0000\\u001f\u007f\u2028\\"\\\\/"')


def check_file(c, vectors):
    keys = {}
    for k in vectors["keys"]:
        key = k["secret"].encode("utf-8")
        c.eq(f"key {k['name']}: key_hex", key.hex(), k["key_hex"])
        c.eq(f"key {k['name']}: key_id", key_id(key), k["key_id"])
        c.eq(f"key {k['name']}: legacy_key_id", legacy_key_id(key), k["legacy_key_id"])
        for kid in key_ids(key):
            keys[kid] = key

    prev = {}
    chains = {}
    for i, v in enumerate(vectors["events"]):
        inp, event = v["input"], v["event"]
        what = f"events[{i}] ({inp['plan_id']} seq {inp['seq']})"
        c.true(f"{what}: plan_id is a lowercase UUID", UUID_RE.fullmatch(inp["plan_id"]))
        c.true(f"{what}: id is a UUIDv7", UUID_RE.fullmatch(inp["id"]) and inp["id"][14] == "7" and inp["id"][19] in "89ab")
        c.true(f"{what}: type", TYPE_RE.fullmatch(inp["type"]) and len(inp["type"]) <= 128)
        c.true(f"{what}: created_at", TIME_RE.fullmatch(inp["created_at"]))

        payload = json.loads(inp["payload_json"])
        canonical = jcs(payload)
        c.eq(f"{what}: payload_canonical", canonical, v["payload_canonical"])
        payload_hash = sha256_hex(canonical.encode("utf-8"))
        c.eq(f"{what}: payload_hash", payload_hash, v["payload_hash"])
        expected_prev = prev.get(inp["plan_id"])
        c.eq(f"{what}: prev_hash", v["prev_hash"], expected_prev)
        expected_seq = len(chains.get(inp["plan_id"], [])) + 1
        c.eq(f"{what}: seq", inp["seq"], expected_seq)

        signed = {
            "plan_id": inp["plan_id"], "seq": inp["seq"], "id": inp["id"], "type": inp["type"],
            "actor": inp["actor"], "created_at": inp["created_at"], "payload_hash": payload_hash,
            "prev_hash": expected_prev, "key_id": inp["key_id"],
        }
        c.eq(f"{what}: signing_input", signing_input(signed), v["signing_input"])
        signature = sign(keys[inp["key_id"]], signed)
        c.eq(f"{what}: signature", signature, v["signature"])

        wire = dict(signed, payload=payload, signature=signature)
        c.eq(f"{what}: event (wire form)", event, wire)
        c.true(f"{what}: hashes are lowercase hex", all(
            h is None or HEX64_RE.fullmatch(h) for h in (event["payload_hash"], event["prev_hash"], event["signature"])))
        prev[inp["plan_id"]] = signature
        chains.setdefault(inp["plan_id"], []).append(event)

    for plan, events in chains.items():
        c.eq(f"chain {plan} verifies", verify_chain(as_stored(events), keys), (True, None, None))

    for n in vectors["negative"]:
        ring = {other: keys[kid] for kid in n["key_ids"] for other in key_ids(keys[kid])}
        exp = n["expected"]
        expected = (exp["chain_valid"], exp["broken_at"], exp["broken_reason"])
        if "events_json" in n:
            events = split_events(n["events_json"])
        else:
            events = as_stored(n["events"])
        retired = {keys[kid]: at for kid, at in (n.get("retired") or {}).items()}
        c.eq(f"negative {n['name']}", verify_chain(events, ring, retired), expected)


def as_stored(events):
    """Events given as parsed values stand for their canonical text, which
    is what the daemon stores and exports (the file shows them pretty-printed)."""
    return [(event, jcs(event["payload"])) for event in events]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "journal-v1.json")
    with open(path, encoding="utf-8") as f:
        vectors = json.load(f)
    c = Checks()
    check_jcs_self_test(c)
    check_file(c, vectors)
    print(f"{c.passed} passed, {c.failed} failed")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
