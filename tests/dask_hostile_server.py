"""Hostile 'scheduler dashboards' on loopback, one misbehaviour per port (run by the Dask tests).

Usage: python dask_hostile_server.py LIFETIME_SECONDS
Prints one JSON line {behaviour: port} when listening; exits after LIFETIME_SECONDS at most.
"""

import asyncio
import json
import os
import sys

LINE = b'dask_scheduler_workers{state="idle"} 1.0\n'


async def garbage(request, writer):
    body = os.urandom(1 << 20)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


async def malformed(request, writer):
    body = b"# TYPE dask_scheduler_workers gauge\n" + b'dask_scheduler_workers{state="idle"} many\n'
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


async def huge(request, writer):
    """A 1 GB body of long lines, written as fast as the reader takes it."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 30))
    chunk = b"# " + b"x" * (1 << 16) + b"\n"
    for _ in range((1 << 30) // len(chunk)):
        writer.write(chunk)
        await writer.drain()


async def endless(request, writer):
    """Valid lines, one every 0.2 s, for ever (chunked, no end)."""
    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    while True:
        writer.write(b"%x\r\n%s\r\n" % (len(LINE), LINE))
        await writer.drain()
        await asyncio.sleep(0.2)


async def redirect(request, writer):
    writer.write(b"HTTP/1.1 302 Found\r\nLocation: /metrics\r\nContent-Length: 0\r\n\r\n")


async def labels(request, writer):
    """100,000 distinct label sets of a metric af-metrics reads."""
    body = b"# TYPE dask_scheduler_workers gauge\n" + b"".join(
        b'dask_scheduler_workers{state="s%d"} 1.0\n' % i for i in range(100_000)
    )
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


async def silent(request, writer):
    await asyncio.sleep(3600)


def liar(metrics: bytes = b"", counts: bytes = b'{"workers": 1, "cores": 1, "bytes": 0}'):
    """A well-formed dashboard whose figures lie: extra ``metrics`` lines, or its own counts.json."""

    async def lie(request, writer):
        if request.startswith(b"GET /json/counts.json "):
            body = counts
        else:
            body = b"# TYPE dask_scheduler_workers gauge\n" + LINE + metrics
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    return lie


LIARS = {
    "lying_inf": liar(counts=b'{"workers": 1e400, "cores": 1, "bytes": 0}'),
    "lying_huge": liar(counts=b'{"workers": 1, "cores": 100000000000000000000, "bytes": 0}'),
    "lying_negative": liar(counts=b'{"workers": 1, "cores": 1, "bytes": -5}'),
    "lying_nan": liar(metrics=b'dask_scheduler_tasks{state="memory"} NaN\n'),
    "lying_counter": liar(metrics=b"dask_scheduler_tasks_suspicious_total -3.0\n"),
    "lying_infinite_clients": liar(metrics=b"dask_scheduler_clients +Inf\n"),
    # not a lie, but 1,000 made-up states with long names: read, summed under "other"
    "odd_states": liar(metrics=b"".join(
        b'dask_scheduler_%s{state="%s%d"} 1.0\n' % (family, b"x" * 200, i) for family in (b"workers", b"tasks") for i in range(500)
    )),
}
BEHAVIOURS = {**{f.__name__: f for f in (garbage, malformed, huge, endless, redirect, labels, silent)}, **LIARS}


def handler(behave):
    async def handle(reader, writer):
        try:
            request = await reader.readuntil(b"\r\n\r\n")
            await behave(request, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return handle


async def main(lifetime: float) -> None:
    servers = {name: await asyncio.start_server(handler(f), "127.0.0.1", 0) for name, f in BEHAVIOURS.items()}
    print(json.dumps({name: s.sockets[0].getsockname()[1] for name, s in servers.items()}), flush=True)
    await asyncio.sleep(lifetime)


if __name__ == "__main__":
    asyncio.run(main(float(sys.argv[1])))
