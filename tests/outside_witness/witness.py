#!/usr/bin/env python3
"""An outside C2SP witness (c2sp.org/tlog-witness), written from the spec
with the Python standard library only, for tests/witnessing_outside.rs.

It is not logbook's code: it shares only the pure-Python Ed25519 verifier
and the RFC 9162 proofs of docs/vectors, which check the vectors in CI.

    witness.py vkey SEED_HEX NAME
        prints the witness's cosignature/v1 vkey and exits
    witness.py serve PORT SEED_HEX NAME LOG_VKEY [MODE]
        serves POST /w/add-checkpoint and GET /state on 127.0.0.1:PORT

MODE is "honest" (the default) or "tamper": its cosignature lines carry a
timestamp one second later than the one it signed, so they never verify.

The witness keeps the latest (size, root) it cosigned for the log, and
answers as the spec says: 404 for an unknown origin, 403 unless the log's
signature verifies, 400 for a malformed body or old > size, 409 with
"text/x.tlog.size" unless old is its size (or when the same size comes with
another root), 422 unless the consistency proof verifies, else 200 with one
cosignature line.
"""
import base64
import contextlib
import hashlib
import http.server
import io
import json
import pathlib
import re
import sys
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "docs" / "vectors"))
with contextlib.redirect_stdout(io.StringIO()):  # they run their own checks on import
    import verify_tlog_vectors as tlog
from rfc9162 import verify_consistency  # noqa: E402

MAX_BODY = 1 << 20


# --- Ed25519 signing, RFC 8032 section 5.1.6, on the verifier's arithmetic ---
def encode_point(p):
    x, y = p
    return (y | ((x & 1) << 255)).to_bytes(32, "little")


def secret_scalar(seed):
    h = hashlib.sha512(seed).digest()
    a = int.from_bytes(h[:32], "little")
    a &= (1 << 254) - 8
    a |= 1 << 254
    return a, h[32:]


def public_key(seed):
    return encode_point(tlog.mul(secret_scalar(seed)[0], tlog.BASE))


def sign(seed, message):
    a, prefix = secret_scalar(seed)
    public = encode_point(tlog.mul(a, tlog.BASE))
    r = int.from_bytes(hashlib.sha512(prefix + message).digest(), "little") % tlog.L
    big_r = encode_point(tlog.mul(r, tlog.BASE))
    k = int.from_bytes(hashlib.sha512(big_r + public + message).digest(), "little") % tlog.L
    return big_r + ((r + k * a) % tlog.L).to_bytes(32, "little")


def key_id(name, alg, public):
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public).digest()[:4]


def parse_vkey(vkey, alg):
    name, kid, key = vkey.split("+", 2)
    key = base64.b64decode(key, validate=True)
    if key[0] != alg or len(key) != 33 or key_id(name, alg, key[1:]).hex() != kid:
        sys.exit(f"bad vkey {vkey!r}")
    return name, bytes.fromhex(kid), key[1:]


class Refused(Exception):
    def __init__(self, status, body="", content_type="text/plain; charset=utf-8"):
        super().__init__(status)
        self.status, self.body, self.content_type = status, body, content_type


class Witness:
    def __init__(self, seed, name, log_vkey, mode):
        self.seed, self.name, self.mode = seed, name, mode
        self.public = public_key(seed)
        self.kid = key_id(name, 0x04, self.public)
        self.log_name, self.log_kid, self.log_key = parse_vkey(log_vkey, 0x01)
        self.latest = None  # (size, root) last cosigned
        self.requests = 0
        self.proofs_checked = 0  # non-empty consistency proofs that verified
        self.refusals = {}

    def parse(self, body):
        try:
            text = body.decode("utf-8")
            old_line, rest = text.split("\n", 1)
            m = re.fullmatch(r"old (0|[1-9][0-9]{0,19})", old_line)
            if m is None or int(m.group(1)) >= 1 << 64:
                raise ValueError(old_line)
            proof = []
            while True:
                line, rest = rest.split("\n", 1)
                if line == "":
                    break
                h = base64.b64decode(line, validate=True)
                if len(h) != 32 or len(proof) == 63:
                    raise ValueError("proof line")
                proof.append(h)
            split = rest.rindex("\n\n")
            note, sigs = rest[: split + 1], rest[split + 2 :]
            origin, size, root = note.rstrip("\n").split("\n")[:3]
            if not re.fullmatch(r"0|[1-9][0-9]{0,19}", size) or int(size) >= 1 << 64:
                raise ValueError("size")
            root = base64.b64decode(root, validate=True)
            if len(root) != 32:
                raise ValueError("root")
            lines = []
            for line in sigs.rstrip("\n").split("\n"):
                dash, name, sig = line.split(" ")
                if dash != "\u2014":
                    raise ValueError("signature line")
                lines.append((name, base64.b64decode(sig, validate=True)))
        except (ValueError, UnicodeDecodeError) as e:
            raise Refused(400, f"malformed request: {e}\n")
        return int(m.group(1)), proof, note, origin, int(size), root, lines

    def add_checkpoint(self, body):
        self.requests += 1
        old, proof, note, origin, size, root, lines = self.parse(body)
        if origin != self.log_name:
            raise Refused(404, "unknown origin\n")
        signed = any(
            name == self.log_name
            and sig[:4] == self.log_kid
            and tlog.ed25519_verify(self.log_key, note.encode(), sig[4:])
            for name, sig in lines
        )
        if not signed:
            raise Refused(403, "unknown log or bad signature\n")
        if old > size:
            raise Refused(400, "old size above the checkpoint's\n")
        cur = self.latest[0] if self.latest else 0
        fork = self.latest is not None and size == cur and root != self.latest[1]
        if old != cur or fork:
            raise Refused(409, f"{cur}\n", "text/x.tlog.size")
        if self.latest is None:
            ok = not proof
        elif old == size:
            ok = not proof
        else:
            ok = verify_consistency(old, size, self.latest[1], root, proof)
            self.proofs_checked += ok
        if not ok:
            raise Refused(422, "the consistency proof does not verify\n")
        self.latest = (size, root)
        stamp = int(time.time())
        message = f"cosignature/v1\ntime {stamp}\n".encode() + note.encode()
        signature = sign(self.seed, message)
        shown = stamp + 1 if self.mode == "tamper" else stamp
        blob = self.kid + shown.to_bytes(8, "big") + signature
        return f"\u2014 {self.name} {base64.b64encode(blob).decode()}\n"

    def state(self):
        return {
            "size": self.latest[0] if self.latest else 0,
            "requests": self.requests,
            "proofs_checked": self.proofs_checked,
            "refusals": self.refusals,
        }


def serve(port, witness):
    lock = threading.Lock()  # one request at a time changes the state

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def answer(self, status, body, content_type):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 (the stdlib's name)
            length = int(self.headers.get("Content-Length") or 0)
            if self.path != "/w/add-checkpoint":
                return self.answer(404, "not found\n", "text/plain")
            if length > MAX_BODY:
                return self.answer(413, "too large\n", "text/plain")
            body = self.rfile.read(length)
            try:
                with lock:
                    line = witness.add_checkpoint(body)
            except Refused as r:
                with lock:
                    witness.refusals[r.status] = witness.refusals.get(r.status, 0) + 1
                return self.answer(r.status, r.body, r.content_type)
            self.answer(200, line, "text/plain; charset=utf-8")

        def do_GET(self):  # noqa: N802
            if self.path != "/state":
                return self.answer(404, "not found\n", "text/plain")
            with lock:
                state = json.dumps(witness.state())
            self.answer(200, state, "application/json")

        def log_message(self, *args):
            pass

    # Threads: the log keeps its connection open between requests.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print("ready", flush=True)
    server.serve_forever()


def main(argv):
    if len(argv) == 4 and argv[1] == "vkey":
        seed, name = bytes.fromhex(argv[2]), argv[3]
        public = public_key(seed)
        kid = key_id(name, 0x04, public).hex()
        print(f"{name}+{kid}+{base64.b64encode(bytes([0x04]) + public).decode()}")
        return
    if len(argv) in (6, 7) and argv[1] == "serve":
        mode = argv[6] if len(argv) == 7 else "honest"
        if mode not in ("honest", "tamper"):
            sys.exit(f"unknown mode {mode!r}")
        witness = Witness(bytes.fromhex(argv[3]), argv[4], argv[5], mode)
        serve(int(argv[2]), witness)
        return
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
