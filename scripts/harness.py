#!/usr/bin/env python
"""Shared pieces of the soak and bench scripts: child processes, metrics, streams.

- :class:`Child` starts a command in its own session and always stops it (SIGTERM, then SIGKILL).
- :func:`start_simulator` / :func:`start_coinfeed` run ``python -m coinfeed simulate|run`` on
  loopback; :func:`parse_metrics` reads a Prometheus text page into ``{(name, labels): value}``.
- :func:`generate_frames` builds a deterministic CoinAPI stream (books, trades, quotes with
  gap-free sequences) and ``serve-stream`` (this file run as a program) serves it, or the first
  N frames of a file with one frame per line (``--frames-file``, e.g. the peer-bench stream),
  pre-framed to one WebSocket client at full speed, like the peer benchmark's server but on
  trio.
- ``bare-client`` (this file run as a program) is the baseline receive loop: connect with one of
  the WebSocket clients coinfeed can use (:data:`BARE_TRANSPORTS`), send the hello, count
  messages, nothing else (no decoding).

    python scripts/harness.py serve-stream --frames 200000 [--seed 7]   # prints READY <port>
    python scripts/harness.py serve-stream --frames-file frames.jsonl [--frames N]
    python scripts/harness.py bare-client --url ws://127.0.0.1:P/v1/ --frames N --transport T
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MetricKey = tuple[str, tuple[tuple[str, str], ...]]
STREAM_SYMBOLS = [
    f"BENCH_SPOT_{base}_USD"
    for base in ["BTC", "ETH", "SOL", "XRP", "ADA", "DOGE", "DOT", "LTC", "AVAX", "LINK"]
]
HELLO_TIMEOUT = 60.0


# ---------------------------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------------------------


class Child:
    """A subprocess in its own session; :meth:`stop` always leaves nothing running."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: dict[str, str] | None = None,
        stdout_pipe: bool = False,
    ) -> None:
        self.argv = list(argv)
        self._log: IO[bytes] | None = log.open("ab") if log is not None else None
        self.log_path = log
        self.log_offset = self._log.tell() if self._log is not None else 0
        """Where this child's output starts in ``log`` (an earlier run's lines come before)."""
        sink: int | IO[bytes] = self._log if self._log is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE if stdout_pipe else sink,
            stderr=sink,
            env=env,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def read_lines(self, count: int, *, timeout: float) -> list[str]:
        """The first ``count`` lines the child prints on stdout (``stdout_pipe=True``)."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        os.set_blocking(self.proc.stdout.fileno(), False)
        buffer = b""
        while len(lines) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.argv[2:4]} printed {lines} within {timeout} s")
            exited = self.proc.poll() is not None
            # Read before judging the exit: a quick child prints its lines and exits between
            # two polls, and what it printed is still in the pipe.
            chunk = self.proc.stdout.read()
            if exited and not chunk:
                raise RuntimeError(f"{self.argv[2:4]} exited with {self.proc.returncode}")
            if chunk:
                buffer += chunk
                *done, buffer = buffer.split(b"\n")
                lines.extend(line.decode() for line in done)
            else:
                time.sleep(0.02)
        return lines

    def terminate(self) -> None:
        """Send SIGTERM (the child's graceful stop)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> int:
        """SIGKILL the whole session at once (a crash, an OOM kill); return the exit code."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        code = self.proc.wait()
        if self._log is not None:
            self._log.close()
        return code

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, *, grace: float = 10.0) -> int:
        """SIGTERM, wait ``grace`` seconds, then SIGKILL the whole session; return the exit code."""
        self.terminate()
        code = self.wait(grace)
        if code is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
        return code


def coinfeed_env() -> dict[str, str]:
    """The environment for coinfeed children: any key works with the simulator, and no restart
    checkpoint unless one is asked for (a run would otherwise leave ``coinfeed-state/`` in the
    working directory, and the next run would backfill from it)."""
    return {"COINFEED_STATE_DIR": "off", **os.environ,
            "COINAPI_KEY": os.environ.get("COINAPI_KEY", "soak-key"),
            "PYTHONUNBUFFERED": "1"}  # fmt: skip


def start_simulator(
    args: Sequence[str], *, log: Path | None = None
) -> tuple[Child, dict[str, str]]:
    """``coinfeed simulate ARGS`` as a child; returns it with its printed URLs."""
    child = Child(
        [sys.executable, "-m", "coinfeed", "simulate", *args],
        log=log,
        env=coinfeed_env(),
        stdout_pipe=True,
    )
    try:
        lines = child.read_lines(3, timeout=30)
    except BaseException:
        child.stop(grace=2)
        raise
    return child, dict(line.split("=", 1) for line in lines)


def start_coinfeed(args: Sequence[str], *, log: Path | None = None) -> Child:
    """``coinfeed run ARGS`` as a child (``COINAPI_KEY`` set)."""
    return Child([sys.executable, "-m", "coinfeed", "run", *args], log=log, env=coinfeed_env())


def coinfeed_http_url(child: Child, *, timeout: float) -> str:
    """The URL a ``coinfeed run --http 127.0.0.1:0 --log-format json`` child listens on, read
    from its log: a port picked in advance could be taken before the child binds it."""
    assert child.log_path is not None, "the child needs a log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with child.log_path.open("rb") as log:
            log.seek(child.log_offset)
            for line in log:
                if b'"http listening"' in line and line.endswith(b"\n"):  # written whole
                    url: str = json.loads(line)["url"]
                    return url
        if child.proc.poll() is not None:
            raise RuntimeError(f"coinfeed exited with {child.proc.returncode} before listening")
        time.sleep(0.1)
    raise RuntimeError(f"coinfeed did not listen within {timeout} s")


def status_bytes(pid: int, field: str) -> int | None:
    """A memory figure of a live process from ``/proc/PID/status`` (``VmRSS``, ``VmHWM``: the
    peak), in bytes; None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def parse_metrics(text: str) -> dict[MetricKey, float]:
    """A Prometheus text page as ``{(sample name, sorted labels): value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[MetricKey, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return out


def metric_sum(metrics: dict[MetricKey, float], name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for (sample, sample_labels), value in metrics.items():
        if sample == name and all((k, v) in sample_labels for k, v in labels.items()):
            total += value
    return total


def histogram_quantile(metrics: dict[MetricKey, float], name: str, q: float) -> float | None:
    """Prometheus-style quantile (linear within the bucket) of histogram ``name``; None if empty."""
    buckets: list[tuple[float, float]] = []
    for (sample, labels), value in metrics.items():
        if sample == f"{name}_bucket":
            le = dict(labels)["le"]
            buckets.append((float("inf") if le == "+Inf" else float(le), value))
    buckets.sort()
    if not buckets or buckets[-1][1] == 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower
            span = count - below
            return lower + (upper - lower) * ((rank - below) / span if span else 1.0)
        lower, below = upper, count
    return lower


# ---------------------------------------------------------------------------------------------
# A pre-built stream and its server
# ---------------------------------------------------------------------------------------------


def generate_frames(count: int, *, seed: int = 7) -> list[bytes]:
    """``count`` CoinAPI frames over 10 symbols: 55 % book, 30 % trade, 15 % quote.

    Each symbol starts with a 20-level book snapshot; updates change 1-3 levels (size 0
    deletes); sequences go up by one per (type, symbol), so a correct client sees no gap.
    """
    from coinfeed.core.protocol import BookUpdate, Level, Quote, Trade, encode

    rng = random.Random(seed)
    sequences: dict[tuple[str, str], int] = {}
    stamp = "2026-11-28T12:00:00.0000000Z"

    def next_seq(kind: str, symbol: str) -> int:
        sequences[kind, symbol] = sequences.get((kind, symbol), 0) + 1
        return sequences[kind, symbol]

    def price(ticks: int) -> Decimal:
        return Decimal(ticks).scaleb(-2)

    def size() -> Decimal:
        return Decimal(rng.randint(1, 500_000_000)).scaleb(-8)

    mids = {symbol: rng.randint(10_000, 5_000_000) for symbol in STREAM_SYMBOLS}
    frames: list[bytes] = []
    for symbol, mid in mids.items():
        frames.append(encode(BookUpdate(
            symbol_id=symbol, sequence=next_seq("book", symbol), time_exchange=stamp,
            time_coinapi=stamp, is_snapshot=True,
            asks=[Level(price(mid + i), size()) for i in range(1, 21)],
            bids=[Level(price(mid - i), size()) for i in range(1, 21)],
        )))  # fmt: skip
    while len(frames) < count:
        symbol = rng.choice(STREAM_SYMBOLS)
        mid = mids[symbol]
        draw = rng.random()
        if draw < 0.55:
            levels = [
                Level(price(mid + rng.choice((-1, 1)) * rng.randint(1, 25)),
                      Decimal(0) if rng.random() < 0.2 else size())
                for _ in range(rng.randint(1, 3))
            ]  # fmt: skip
            asks = [level for level in levels if level.price > price(mid)]
            bids = [level for level in levels if level.price < price(mid)]
            message: object = BookUpdate(
                symbol_id=symbol, sequence=next_seq("book", symbol), time_exchange=stamp,
                time_coinapi=stamp, is_snapshot=False, asks=asks, bids=bids,
            )  # fmt: skip
        elif draw < 0.85:
            message = Trade(
                symbol_id=symbol, sequence=next_seq("trade", symbol), time_exchange=stamp,
                time_coinapi=stamp, uuid=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                price=price(mid), size=size(), taker_side=rng.choice(("BUY", "SELL")),
            )  # fmt: skip
        else:
            message = Quote(
                symbol_id=symbol, sequence=next_seq("quote", symbol), time_exchange=stamp,
                time_coinapi=stamp, ask_price=price(mid + 1), ask_size=size(),
                bid_price=price(mid - 1), bid_size=size(),
            )  # fmt: skip
        frames.append(encode(message))
    return frames


def read_frames_file(path: Path, count: int | None = None) -> list[bytes]:
    """The first ``count`` frames (all if None) of a file holding one frame per line."""
    frames: list[bytes] = []
    with path.open("rb") as file:
        for line in file:
            if count is not None and len(frames) >= count:
                break
            line = line.rstrip(b"\r\n")
            if line:
                frames.append(line)
    if count is not None and len(frames) < count:
        raise ValueError(f"{path} holds {len(frames)} frames, fewer than the {count} asked for")
    return frames


def prebuild_chunks(frames: Sequence[bytes], chunk_bytes: int = 256 * 1024) -> list[bytes]:
    """Frame each message once as an unmasked text frame; join them into ~``chunk_bytes`` writes."""
    chunks: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for body in frames:
        n = len(body)
        if n < 126:
            head = bytes((0x81, n))
        elif n < 65536:
            head = b"\x81\x7e" + n.to_bytes(2, "big")
        else:
            head = b"\x81\x7f" + n.to_bytes(8, "big")
        parts += (head, body)
        size += len(head) + n
        if size >= chunk_bytes:
            chunks.append(b"".join(parts))
            parts, size = [], 0
    if parts:
        chunks.append(b"".join(parts))
    return chunks


async def serve_stream(chunks: list[bytes], *, port: int = 0, lifetime: float = 120.0) -> None:
    """Serve ``chunks`` to the first WebSocket client after its first message, then close 1000.

    Prints ``READY <port>``, ``HELLO <monotonic time>`` and ``SENT <monotonic time>``. Later
    connections get a 1013 close at once. Stops after serving (or after ``lifetime`` seconds).
    """
    import trio

    done = trio.Event()
    served = False

    async def handle(stream: trio.SocketStream) -> None:
        nonlocal served
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                data = await stream.receive_some(65536)
                if not data:
                    return
                request += data
            key = b""
            for line in request.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            accept = base64.b64encode(
                hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
            )
            await stream.send_all(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            if served:
                await stream.send_all(b"\x88\x02" + (1013).to_bytes(2, "big"))
                return
            served = True
            with trio.fail_after(HELLO_TIMEOUT):
                await stream.receive_some(65536)  # the hello (any client message)
            print(f"HELLO {time.monotonic():.6f}", flush=True)
            for chunk in chunks:
                await stream.send_all(chunk)
            await stream.send_all(b"\x88\x02" + (1000).to_bytes(2, "big"))
            print(f"SENT {time.monotonic():.6f}", flush=True)
            with trio.move_on_after(5):
                while await stream.receive_some(65536):
                    pass
            done.set()
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError):
            done.set()
        finally:
            await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, handle, port)
        bound = listeners[0].socket.getsockname()[1]
        print(f"READY {bound}", flush=True)
        with trio.move_on_after(lifetime):
            await done.wait()
            await trio.sleep(1.0)  # let the client's reconnect attempts see a 1013, not a reset
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# The bare receive loop (the baseline of bench.py)
# ---------------------------------------------------------------------------------------------

BARE_HELLO = json.dumps(
    {"type": "hello", "heartbeat": True, "subscribe_data_type": ["trade", "quote", "book"]}
)
BARE_TRANSPORTS = ("direct", "websockets", "trio-websocket")
"""The bare loops, one per ``transport`` setting of coinfeed (``coinfeed.config.TRANSPORTS``)."""


async def bare_client(url: str, frames: int, transport: str) -> dict[str, float]:
    """Connect, send the hello, count messages until ``frames``; times on the monotonic clock.

    - ``direct``: coinfeed's own client (:class:`coinfeed.transport.direct.DirectTransport`), one
      ``receive_batch()`` per socket read, counting the messages each returns;
    - ``websockets``: ``websockets.trio.client``, one ``await ws.recv()`` per message;
    - ``trio-websocket``: with coinfeed's buffer sizes, one ``await get_message()`` per message.

    ``cpu_seconds`` is this process's CPU time over the same interval (hello to last message).
    """
    import trio

    if transport == "direct":
        from coinfeed.transport.direct import DirectTransport

        async with trio.open_nursery() as nursery:
            ws = await DirectTransport().connect(nursery, url, headers=[])
            await ws.send(BARE_HELLO)
            started, cpu_started = time.monotonic(), time.process_time()
            count = 0
            while count < frames:
                count += len(await ws.receive_batch())
            ended, cpu_ended = time.monotonic(), time.process_time()
            with trio.move_on_after(2, shield=True):
                await ws.aclose()
    elif transport == "websockets":
        from websockets.trio.client import connect

        async with connect(url, compression=None, max_size=None, ping_interval=None) as client:
            await client.send(BARE_HELLO)
            started, cpu_started = time.monotonic(), time.process_time()
            count = 0
            while count < frames:
                await client.recv()
                count += 1
            ended, cpu_ended = time.monotonic(), time.process_time()
    elif transport == "trio-websocket":
        import trio_websocket

        from coinfeed.transport.libraries import LIBRARY_QUEUE_MESSAGES, RECEIVE_BUFFER_BYTES

        async with trio.open_nursery() as nursery:
            conn = await trio_websocket.connect_websocket_url(
                nursery,
                url,
                message_queue_size=LIBRARY_QUEUE_MESSAGES,
                max_message_size=8 << 20,
                receive_buffer_size=RECEIVE_BUFFER_BYTES,
            )
            await conn.send_message(BARE_HELLO)
            started, cpu_started = time.monotonic(), time.process_time()
            count = 0
            while count < frames:
                await conn.get_message()
                count += 1
            ended, cpu_ended = time.monotonic(), time.process_time()
            with trio.move_on_after(2, shield=True):
                await conn.aclose()
            nursery.cancel_scope.cancel()
    else:
        raise ValueError(f"unknown transport {transport!r}; one of {BARE_TRANSPORTS}")
    return {"started": started, "ended": ended, "frames": float(count),
            "cpu_seconds": cpu_ended - cpu_started}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    import trio

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve-stream", help="serve a generated stream to one client")
    serve.add_argument(
        "--frames",
        type=int,
        default=None,
        help="frames to serve (200,000 generated; all of --frames-file)",
    )
    serve.add_argument(
        "--frames-file",
        type=Path,
        default=None,
        help="serve this file's frames (one per line) instead of generating",
    )
    serve.add_argument("--seed", type=int, default=7)
    serve.add_argument("--timeout", type=float, default=120.0)
    client = commands.add_parser("bare-client", help="count messages on a bare receive loop")
    client.add_argument("--url", required=True)
    client.add_argument("--frames", type=int, required=True)
    client.add_argument("--transport", choices=BARE_TRANSPORTS, default="direct")
    args = parser.parse_args(argv)
    if args.command == "serve-stream":
        if args.frames_file is not None:
            frames = read_frames_file(args.frames_file, args.frames)
        else:
            frames = generate_frames(args.frames or 200_000, seed=args.seed)
        chunks = prebuild_chunks(frames)
        del frames
        trio.run(lambda: serve_stream(chunks, lifetime=args.timeout))
    else:
        result = trio.run(bare_client, args.url, args.frames, args.transport)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
