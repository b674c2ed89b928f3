#!/usr/bin/env python3
"""JetStream publishes with ack, for bench/run.sh: N concurrent publishers,
1 KiB payloads, for SECS seconds; prints messages acknowledged per second.

    nats_pub.py URL CLIENTS SECS

The stream `bench` (subject `ev.>`, file storage) is created if missing; the
server's `sync_interval: always` makes every ack wait for an fsync."""
import asyncio
import sys
import time

import nats


async def main(url, clients, secs):
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.add_stream(name="bench", subjects=["ev.>"], storage="file")
    except Exception:
        pass
    payload = b"x" * 1024
    done = 0
    stop = time.monotonic() + secs

    async def publisher(i):
        nonlocal done
        while time.monotonic() < stop:
            await js.publish(f"ev.{i % 16}", payload)
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(publisher(i) for i in range(clients)))
    elapsed = time.monotonic() - started
    await nc.close()
    print(f"{done / elapsed:.0f}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
