"""The recording format: segment files of length-prefixed records in independent zstd frames.

How this works (``docs/recording.md`` is the full description, for readers in any language):

- A segment file is a concatenation of complete zstd frames; decompressed one after the other
  they give one stream of records. A file cut short by a crash keeps every complete frame, and
  a reader reports the rest as a truncated tail.
- A record is ``length: u32`` (the bytes that follow it), ``kind: u8`` and a body. All integers
  are little-endian.
- The first record of a segment is its ``HEADER`` (JSON): the format version, the coinfeed
  version, the run it belongs to and the settings that shape the processor's work.
- A ``BATCH`` is one batch exactly as the processor took it: the clock readings it was handled
  at, its items in order (frames as handed over, control items as JSON, encoded when the
  processor handled them), the drop summary and the answers recovery gave while it was handled.
- ``SENT`` is a message coinfeed sent (hello, subscribe, unsubscribe), the API key removed.
- ``END`` closes a run that stopped cleanly, with the answers of the shutdown's last report.

This module is pure: bytes in, records out, no trio, no files.
"""

from __future__ import annotations

import struct
import sys
from array import array
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import attrs
import msgspec

from coinfeed.core.controls import (
    ConnectionLost,
    ConnectionOpened,
    ControlItem,
    InterimBook,
    Resubscribed,
    ResyncFailed,
    TradesRecovered,
    TradesUnrecovered,
    TradeWindow,
)

FORMAT_NAME: Final = "coinfeed-recording"
FORMAT_VERSION: Final = 1
SEGMENT_SUFFIX: Final = ".cfrec"

HEADER: Final = 0x48  # "H"
BATCH: Final = 0x42  # "B"
SENT: Final = 0x53  # "S"
END: Final = 0x45  # "E"

FRAME_BYTES: Final = 0
"""An item handed over as bytes (the direct transport's text frames: UTF-8, as received)."""
FRAME_TEXT: Final = 1
"""An item handed over as ``str`` (the library transports); stored UTF-8 encoded."""
CONTROL: Final = 2
"""A control item, as JSON ``{"type": NAME, "item": {...}}``."""

_RECORD_HEAD: Final = struct.Struct("<IB")
_BATCH_HEAD: Final = struct.Struct("<qdII")
"""wall clock (ns since the epoch), trio clock (seconds), item count, extra JSON length."""
_CLOCKS: Final = struct.Struct("<qd")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

CONTROL_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        ConnectionOpened,
        ConnectionLost,
        Resubscribed,
        TradesRecovered,
        TradesUnrecovered,
        InterimBook,
        ResyncFailed,
    )
}

_encoder = msgspec.json.Encoder()
_BIG_ENDIAN: Final = sys.byteorder == "big"
assert array("I").itemsize == 4, "item lengths are stored as 32-bit words"


class RecordingError(Exception):
    """A recording that cannot be read as one (a newer format, not a recording at all)."""


def wall_ns(wall: datetime) -> int:
    """Nanoseconds since the epoch, exactly (datetimes hold microseconds)."""
    return (wall - _EPOCH) // timedelta(microseconds=1) * 1000


def wall_from_ns(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


def encode_record(kind: int, body: bytes) -> bytes:
    return _RECORD_HEAD.pack(len(body) + 1, kind) + body


def encode_header(header: dict[str, object]) -> bytes:
    return encode_record(HEADER, _encoder.encode(header))


def encode_control(item: ControlItem) -> bytes:
    return _encoder.encode({"type": type(item).__name__, "item": item})


def decode_control(data: bytes | memoryview) -> ControlItem:
    raw = msgspec.json.decode(data)
    cls = CONTROL_TYPES.get(str(raw.get("type"))) if isinstance(raw, dict) else None
    if cls is None:
        raise RecordingError(f"unknown control item in the recording: {bytes(data[:80])!r}")
    item: ControlItem = msgspec.convert(raw["item"], cls, strict=False)
    return item


def encode_batch(
    items: list[Any], controls: list[bytes], extra: dict[str, object], wall: int, now: float
) -> list[bytes]:
    """One BATCH record as a list of parts whose concatenation is the record: the head, then the
    payloads themselves (frames are not copied here). ``controls`` are the encodings of the
    batch's control items, in order."""
    kinds = bytearray(len(items))
    payloads: list[bytes]
    if not controls and set(map(type, items)) <= {bytes}:
        payloads = items  # the direct transport's usual batch: no item needs a look
    else:
        payloads = []
        append = payloads.append
        next_control = iter(controls).__next__
        for index, item in enumerate(items):
            kind = type(item)
            if kind is bytes:
                append(item)
            elif kind is str:
                kinds[index] = FRAME_TEXT
                append(item.encode())
            else:
                kinds[index] = CONTROL
                append(next_control())
    lengths = array("I", map(len, payloads))
    if _BIG_ENDIAN:  # pragma: no cover - the format is little-endian everywhere
        lengths.byteswap()
    extra_bytes = _encoder.encode(extra) if extra else b""
    head = _BATCH_HEAD.pack(wall, now, len(items), len(extra_bytes))
    size = len(head) + len(kinds) + 4 * len(items) + len(extra_bytes)
    size += sum(map(len, payloads))
    record_head = _RECORD_HEAD.pack(size + 1, BATCH)
    return [b"".join((record_head, head, kinds, lengths.tobytes(), extra_bytes)), *payloads]


def encode_clocked(kind: int, wall: int, now: float, body: bytes) -> bytes:
    """A SENT or END record: the clocks, then ``body``."""
    return encode_record(kind, _CLOCKS.pack(wall, now) + body)


# -- reading -----------------------------------------------------------------------------------


@attrs.frozen
class Batch:
    """One recorded processor batch."""

    wall_ns: int
    now: float
    items: list[str | bytes | ControlItem]
    drops: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    reads: list[tuple[int, int, float]] = attrs.field(factory=list)
    """``(index, wall ns, trio clock)`` of each socket read: when the frames from ``index`` to
    the next read's came off the socket (a run recorded without them: empty)."""


@attrs.frozen
class Sent:
    wall_ns: int
    now: float
    text: str


@attrs.frozen
class End:
    wall_ns: int
    now: float
    answers: list[dict[str, Any]]


Record = dict[str, Any] | Batch | Sent | End
"""A decoded record: the header (a dict), or one of the others."""


def check_header(header: object, where: str) -> dict[str, Any]:
    """The header of a segment, refused when it is not one or comes from a newer format."""
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise RecordingError(f"{where}: not a coinfeed recording segment")
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RecordingError(
            f"{where}: recording format version {version} is newer than this coinfeed reads "
            f"({FORMAT_VERSION}); it was written by {header.get('written_by')}: "
            "replay it with that version or later"
        )
    return header


def decode_record(kind: int, body: bytes) -> Record:
    if kind == BATCH:
        return _decode_batch(body)
    if kind == HEADER:
        header: dict[str, Any] = msgspec.json.decode(body)
        return header
    if kind in (SENT, END):
        wall, now = _CLOCKS.unpack_from(body)
        rest = body[_CLOCKS.size :]
        if kind == SENT:
            return Sent(wall, now, rest.decode())
        extra = msgspec.json.decode(rest) if len(rest) else {}
        return End(wall, now, list(extra.get("answers", ())))
    raise RecordingError(f"unknown record kind {kind:#x}")


def _decode_batch(data: bytes) -> Batch:
    body = memoryview(data)
    wall, now, count, extra_len = _BATCH_HEAD.unpack_from(body)
    at = _BATCH_HEAD.size
    kinds = body[at : at + count]
    at += count
    lengths = array("I")
    lengths.frombytes(body[at : at + 4 * count])
    if _BIG_ENDIAN:  # pragma: no cover
        lengths.byteswap()
    at += 4 * count
    extra = msgspec.json.decode(body[at : at + extra_len]) if extra_len else {}
    at += extra_len
    items: list[str | bytes | ControlItem] = []
    for kind, length in zip(kinds, lengths, strict=True):
        payload = body[at : at + length]
        at += length
        if kind == FRAME_BYTES:
            items.append(bytes(payload))
        elif kind == FRAME_TEXT:
            items.append(bytes(payload).decode())
        elif kind == CONTROL:
            items.append(decode_control(payload))
        else:
            raise RecordingError(f"unknown item kind {kind} in a batch")
    if at != len(body):
        raise RecordingError("a batch record's lengths do not add up to its size")
    reads = [(index, read_ns, read_now) for index, read_ns, read_now in extra.get("reads", ())]
    drops, answers = list(extra.get("drops", ())), list(extra.get("answers", ()))
    return Batch(wall, now, items, drops, answers, reads)


@attrs.define(slots=True, eq=False)
class RecordSplitter:
    """Cuts a decompressed stream, fed in any pieces, into whole records."""

    _buffer: bytearray = attrs.field(factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """Append ``data``; return every record now complete as ``(kind, body)``."""
        buffer = self._buffer
        buffer += data
        records = []
        at = 0
        end = len(buffer)
        head = _RECORD_HEAD.size
        while end - at >= head:
            length, kind = _RECORD_HEAD.unpack_from(buffer, at)
            if length < 1:
                raise RecordingError("a record of length 0")
            if end - at < 4 + length:
                break
            records.append((kind, bytes(buffer[at + head : at + 4 + length])))
            at += 4 + length
        del buffer[:at]
        return records

    @property
    def pending(self) -> int:
        """Bytes of an incomplete record held (a truncated tail at the end of a file)."""
        return len(self._buffer)


def window_answer(windows: list[TradeWindow]) -> list[dict[str, Any]]:
    """Trade windows as an answer value (plain data, encoded with the batch)."""
    return [msgspec.to_builtins(window) for window in windows]


def windows_of(value: object) -> list[TradeWindow]:
    return msgspec.convert(value, list[TradeWindow], strict=False)
