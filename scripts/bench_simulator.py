#!/usr/bin/env python
"""How many frames/s the simulator's market + WebSocket encoding sustains to one loopback client.

The simulator runs in this process (one core, like production); the client runs in a child
process (the other core) and is deliberately minimal (a raw socket that counts WebSocket frames),
so the figure is the simulator's, not a client library's. For each requested rate the client
subscribes to every symbol and type, waits a warm-up, then counts frames over several rounds;
the median of the rounds is the delivered rate. A rate is "sustained" when the median reaches
97% of the request and the connection was not cut (buffer overflow).

    .venv/bin/python scripts/bench_simulator.py [--rates 50000,75000,100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from coinfeed.simulator import SimulatorConfig, open_simulator

HELLO = {
    "type": "hello",
    "heartbeat": True,
    "subscribe_data_type": ["trade", "quote", "book"],
    "subscribe_filter_symbol_id": ["BITSTAMP", "COINBASE", "BINANCE", "KRAKEN"],
}


def _client_frame(payload: bytes) -> bytes:
    """A masked client text frame (all-zero mask: valid and cheap)."""
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else b"\x81\xfe" + n.to_bytes(2, "big")
    return head + b"\x00\x00\x00\x00" + payload


def run_client(url: str, warmup: float, rounds: int, seconds: float) -> None:
    """Child process: connect, subscribe, count frames per round, print JSON on stdout."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(4096)
    buf = buf.split(b"\r\n\r\n", 1)[1]
    sock.sendall(_client_frame(json.dumps(HELLO).encode()))
    results: list[float] = []
    frames = 0
    closed = False
    phase_end = time.perf_counter() + warmup
    phase = -1
    round_start = time.perf_counter()
    while phase < rounds:
        chunk = sock.recv(1 << 20)
        if not chunk:
            closed = True
            break
        buf += chunk
        i, n = 0, len(buf)
        while n - i >= 2:
            ln = buf[i + 1] & 0x7F
            hdr = 2
            if ln == 126:
                if n - i < 4:
                    break
                ln, hdr = int.from_bytes(buf[i + 2 : i + 4], "big"), 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln, hdr = int.from_bytes(buf[i + 2 : i + 10], "big"), 10
            if n - i < hdr + ln:
                break
            if buf[i] & 0x0F == 0x8:
                closed = True
            i += hdr + ln
            frames += 1
        buf = buf[i:]
        now = time.perf_counter()
        if now >= phase_end or closed:
            if phase >= 0:
                results.append(frames / (now - round_start))
            phase += 1
            frames, round_start, phase_end = 0, now, now + seconds
            if closed:
                break
    sock.close()
    cpu = time.process_time()
    print(json.dumps({"rates": results, "closed": closed, "client_cpu": cpu}), flush=True)


async def measure(rate: float, rounds: int, seconds: float) -> tuple[float, bool, float]:
    """Run the simulator at ``rate`` with a child client; (median frames/s, cut, cpu share)."""
    config = SimulatorConfig(rate=rate, seed=7)
    async with open_simulator(config) as sim:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        cmd = [sys.executable, __file__, "--client", sim.ws_url, "--rounds", str(rounds)]
        cmd += ["--seconds", str(seconds)]
        done = await trio.run_process(cmd, capture_stdout=True, check=True)
        cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    out = json.loads(done.stdout)
    rates = out["rates"] or [0.0]
    return statistics.median(rates), bool(out["closed"]), cpu


async def main(args: argparse.Namespace) -> None:
    rates = [float(r) for r in args.rates.split(",")]
    best = 0.0
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus; rounds of {args.seconds} s")
    for rate in rates:
        median, cut, cpu = await measure(rate, args.rounds, args.seconds)
        ok = not cut and median >= 0.97 * rate
        best = max(best, median) if ok else best
        verdict = "sustained" if ok else ("CUT (overflow)" if cut else "not sustained")
        print(
            f"requested {rate:>9,.0f}/s  delivered median {median:>9,.0f} frames/s  "
            f"simulator cpu {cpu:4.0%}  {verdict}",
            flush=True,
        )
    print(f"sustained_frames_per_second={best:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="25000,50000,75000,100000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=float, default=1.0, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.client:
        run_client(a.client, a.warmup, a.rounds, a.seconds)
    else:
        from loguru import logger

        logger.remove()
        trio.run(main, a)
