"""Fixed-count append load for bench/instructions.sh: PORT CONNECTIONS COUNT.

Each connection posts COUNT / CONNECTIONS appends of bench/append.lua's body
to one plan, one at a time, over HTTP/1.1 keep-alive, and the script prints
how many were answered 201. Standard library only.
"""
import socket
import sys
import threading

port, conns, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
plan = "0192f3a4-5b6c-7d8e-9f00-000000000000"
body = ('{"type":"ledger.transaction","actor":"bench","payload":{"pad":"' + "x" * 960 + '"}}').encode()
request = (
    f"POST /api/plans/{plan}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
).encode() + body
created = 0
lock = threading.Lock()


def post(times):
    global created
    with socket.create_connection(("127.0.0.1", port)) as sock, sock.makefile("rb") as answers:
        for _ in range(times):
            sock.sendall(request)
            status = answers.readline()
            length = 0
            while (header := answers.readline()) not in (b"\r\n", b""):
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            answers.read(length)
            if b" 201 " in status:
                with lock:
                    created += 1
            else:
                print(status.decode().strip(), file=sys.stderr)


threads = [threading.Thread(target=post, args=(count // conns,)) for _ in range(conns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(created)
