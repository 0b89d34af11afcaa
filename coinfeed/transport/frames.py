"""The client side of RFC 6455 framing, sans-I/O: bytes in, messages and control frames out.

How this works: :meth:`FrameReader.feed` takes whatever one socket read returned and gives back
every complete data message in it, in order, as ``bytes`` (text and binary alike; a text message
has been checked to be UTF-8, RFC 6455 §8.1). Ping, pong and close frames come out separately,
for the caller to answer. A partial frame at the end of a read waits for the next read; its bytes
are only joined once enough of them have arrived, so a large message costs one copy, not one per
read.

Anything a server must not send is a :class:`FrameViolation` carrying the close code to fail the
connection with (RFC 6455 §7.4.1): a masked frame, reserved bits without a negotiated extension,
an unknown opcode, a bad control frame or continuation (1002), and a message longer than
``max_message_bytes`` (1009), refused from its header, before its payload is read, and a text
message that is not UTF-8 (1007), checked once the message is complete (so a fragment may end
mid-character). The check costs little: ``bytes.isascii`` (no copy) passes CoinAPI's JSON, and
only a message with other bytes is decoded, in slices so that a large one never costs a ``str``
up to four times its size. Messages completed before the violation in the same read are still
returned (the violation is then held in :attr:`FrameReader.violation`): they were valid, and
nothing valid is thrown away.

Why coinfeed frames WebSocket itself: parsing is the hot path, and this parser costs a fraction
of a library's per frame (``scripts/bench_core.py`` prints both). The handshake is h11's (see
:mod:`coinfeed.transport.direct`).
"""

from __future__ import annotations

import codecs
import os
import struct
from typing import Final

import attrs

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL_ERROR: Final = 1002
CLOSE_NO_STATUS: Final = 1005
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009

_FIN_TEXT: Final = 0x80 | OP_TEXT
_FIN_BINARY: Final = 0x80 | OP_BINARY
_UTF8_SLICE: Final = 64 * 1024
_U16: Final = struct.Struct("!H")
_U64: Final = struct.Struct("!Q")


class FrameViolation(Exception):
    """The server broke the framing rules; fail the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


@attrs.frozen
class ControlFrame:
    """A ping, pong or close frame, in the order received relative to other control frames."""

    opcode: int
    payload: bytes


@attrs.define(slots=True, eq=False)
class FrameReader:
    """Parses a server's frames (see module docstring). Not thread-safe; one per connection."""

    max_message_bytes: int
    controls: list[ControlFrame] = attrs.field(factory=list, init=False)
    """Control frames parsed so far and not yet taken (the caller clears it)."""
    _tail: list[bytes] = attrs.field(factory=list, init=False)
    _tail_bytes: int = attrs.field(default=0, init=False)
    _need: int = attrs.field(default=2, init=False)
    _fragments: list[bytes] | None = attrs.field(default=None, init=False)
    _fragment_bytes: int = attrs.field(default=0, init=False)
    _fragments_text: bool = attrs.field(default=False, init=False)
    _closed: bool = attrs.field(default=False, init=False)
    violation: FrameViolation | None = attrs.field(default=None, init=False)
    """A violation found after complete messages of the same ``feed``: those were returned, and
    the caller must now fail the connection. Nothing more is parsed."""

    def feed(self, data: bytes) -> list[bytes]:
        """Parse ``data`` after what is buffered; return the complete data messages in it.

        Raises :class:`FrameViolation` when the data breaks the protocol before any complete
        message; a violation after some is held in :attr:`violation` (see module docstring).
        Nothing after a close frame or a violation is parsed.
        """
        if self._closed:
            return []
        if self._tail:
            self._tail.append(data)
            self._tail_bytes += len(data)
            if self._tail_bytes < self._need:
                return []
            buf = b"".join(self._tail)
            self._tail.clear()
        else:
            buf = data
        messages: list[bytes] = []
        end = len(buf)
        try:
            pos = self._parse(buf, 0, end, messages)
        except FrameViolation as violation:
            self._closed = True
            if not messages:
                raise
            self.violation = violation
            return messages
        if pos < end:
            rest = buf[pos:] if pos else buf
            self._tail.append(rest)
            self._tail_bytes = len(rest)
        else:
            self._tail_bytes = 0
        return messages

    def _parse(self, buf: bytes, pos: int, end: int, messages: list[bytes]) -> int:
        """Frames from ``pos``; returns where the first incomplete frame starts."""
        limit = self.max_message_bytes
        append = messages.append
        while end - pos >= 2:
            head = buf[pos]
            length = buf[pos + 1]
            if length < 126:
                start = pos + 2
            elif length == 126:
                if end - pos < 4:
                    self._need = 4
                    return pos
                length = _U16.unpack_from(buf, pos + 2)[0]
                start = pos + 4
                if head & 0x08 and length > 125:  # opcodes 8-15: control, at most 125 bytes
                    raise FrameViolation(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes")
            elif length == 127:
                if end - pos < 10:
                    self._need = 10
                    return pos
                length = _U64.unpack_from(buf, pos + 2)[0]
                start = pos + 10
                if length >> 63:
                    raise FrameViolation(CLOSE_PROTOCOL_ERROR, "payload length over 2**63")
                if head & 0x08 and length > 125:
                    raise FrameViolation(CLOSE_PROTOCOL_ERROR, "control frame over 125 bytes")
            else:
                raise FrameViolation(CLOSE_PROTOCOL_ERROR, "masked frame from the server")
            if length > limit:
                raise FrameViolation(CLOSE_TOO_BIG, f"message over {limit} bytes")
            stop = start + length
            if stop > end:
                self._need = stop - pos
                return pos
            if head == _FIN_TEXT and self._fragments is None:  # the hot path: CoinAPI's JSON
                payload = buf[start:stop]
                if not payload.isascii():  # no copy, no str: half the cost of decode()
                    check_utf8(payload)
                append(payload)
            elif head == _FIN_BINARY and self._fragments is None:
                append(buf[start:stop])
            else:
                self._other_frame(head, buf[start:stop], messages)
                if self._closed:
                    return end
            pos = stop
        self._need = 2
        return pos

    def _other_frame(self, head: int, payload: bytes, messages: list[bytes]) -> None:
        """Everything but an unfragmented data message: fragments, control frames, violations."""
        if head & 0x70:
            raise FrameViolation(CLOSE_PROTOCOL_ERROR, "reserved bits set (no extension)")
        fin = bool(head & 0x80)
        opcode = head & 0x0F
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise FrameViolation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            if not fin:  # (a length over 125 was refused from the header)
                raise FrameViolation(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
            if opcode == OP_CLOSE:
                self._closed = True
            self.controls.append(ControlFrame(opcode, payload))
            return
        if opcode > OP_BINARY:
            raise FrameViolation(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        fragments = self._fragments
        if opcode == OP_CONTINUATION:
            if fragments is None:
                raise FrameViolation(CLOSE_PROTOCOL_ERROR, "continuation without a message")
        elif fragments is not None:
            raise FrameViolation(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
        else:
            fragments = self._fragments = []
            self._fragment_bytes = 0
            self._fragments_text = opcode == OP_TEXT
        self._fragment_bytes += len(payload)
        if self._fragment_bytes > self.max_message_bytes:
            raise FrameViolation(CLOSE_TOO_BIG, f"message over {self.max_message_bytes} bytes")
        fragments.append(payload)
        if fin:
            message = b"".join(fragments)
            if self._fragments_text and not message.isascii():
                check_utf8(message)
            messages.append(message)
            self._fragments = None
            self._fragment_bytes = 0

    def buffered_bytes(self) -> int:
        """Bytes held for an incomplete frame or message (bounded by the message limit)."""
        return self._tail_bytes + self._fragment_bytes


def check_utf8(payload: bytes) -> None:
    """Raise :class:`FrameViolation` (1007) unless ``payload`` is UTF-8 (RFC 3629: no
    surrogates, no overlong forms, nothing above U+10FFFF; Python's codec refuses them all)."""
    try:
        if len(payload) <= _UTF8_SLICE:
            payload.decode()
        else:  # a slice at a time: the str of each is dropped at once
            decoder = codecs.getincrementaldecoder("utf-8")()
            view = memoryview(payload)
            for start in range(0, len(payload), _UTF8_SLICE):
                decoder.decode(view[start : start + _UTF8_SLICE])
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise FrameViolation(
            CLOSE_INVALID_DATA, f"text message is not UTF-8 ({exc.reason})"
        ) from None


WIRE_CLOSE_CODES: Final = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
"""The 1xxx codes a close frame may carry: RFC 6455 §7.4.1's and IANA's 1012-1014. So may
3000-4999 (libraries, applications). 1005, 1006 and 1015 only report what happened locally."""


def parse_close(payload: bytes) -> tuple[int, str]:
    """A close frame's code and reason (1005 when it carries none)."""
    if not payload:
        return CLOSE_NO_STATUS, ""
    if len(payload) == 1:
        raise FrameViolation(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
    code: int = _U16.unpack_from(payload)[0]
    if code not in WIRE_CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameViolation(CLOSE_PROTOCOL_ERROR, f"close code {code} is not allowed on the wire")
    try:
        reason = payload[2:].decode()
    except UnicodeDecodeError:
        raise FrameViolation(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


def close_payload(code: int, reason: str = "") -> bytes:
    """The payload of a close frame with ``code`` (reason cut to fit 125 bytes, on a character
    boundary: a reason that is not UTF-8 would make the server fail the connection with 1007)."""
    return _U16.pack(code) + reason.encode()[:123].decode(errors="ignore").encode()


def encode_frame(opcode: int, payload: bytes, *, mask: bytes | None = None) -> bytes:
    """One final client frame: masked with ``mask`` (4 random bytes if not given), RFC §5.3."""
    key = os.urandom(4) if mask is None else mask
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + _U16.pack(length)
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + _U64.pack(length)
    return header + key + apply_mask(payload, key)


def apply_mask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-byte ``key`` (masking and unmasking are the same)."""
    length = len(payload)
    if not length:
        return b""
    repeated = (key * (length // 4 + 1))[:length]
    masked = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return masked.to_bytes(length, "big")
