"""coinfeed's RFC 6455 client-side frame reader, checked against websockets' own sans-I/O parser.

Pure: no sockets. The differential test feeds the same bytes, cut at arbitrary points, to
:class:`FrameReader` and to ``websockets.protocol.Protocol`` (client side) and compares the
messages and control frames each yields.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from coinfeed.transport.frames import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ControlFrame,
    FrameReader,
    FrameViolation,
    apply_mask,
    close_payload,
    encode_frame,
    parse_close,
)

LIMIT = 8 * 1024 * 1024


def server_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    encoding: int | None = None,
    mask: bytes | None = None,
) -> bytes:
    """One frame as a server would write it; ``encoding`` forces the 7-, 16- or 64-bit length."""
    length = len(payload)
    if encoding is None:
        encoding = 7 if length < 126 else 16 if length < 1 << 16 else 64
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    mask_bit = 0x80 if mask is not None else 0
    if encoding == 7:
        assert length < 126
        header = head + bytes([mask_bit | length])
    elif encoding == 16:
        assert length < 1 << 16
        header = head + bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        header = head + bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def reference_parse(data: bytes) -> tuple[list[bytes], list[tuple[int, bytes]]]:
    """What websockets' client-side parser makes of ``data``: joined messages, control frames."""
    protocol = Protocol(Side.CLIENT, state=State.OPEN, max_size=None)
    protocol.receive_data(data)
    assert protocol.parser_exc is None, protocol.parser_exc
    messages: list[bytes] = []
    controls: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    for frame in protocol.events_received():
        assert isinstance(frame, Frame)
        if frame.opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE):
            controls.append((int(frame.opcode), bytes(frame.data)))
            continue
        parts.append(bytes(frame.data))
        if frame.fin:
            messages.append(b"".join(parts))
            parts = []
    return messages, controls


def feed_chunks(reader: FrameReader, data: bytes, cuts: list[int]) -> list[bytes]:
    messages: list[bytes] = []
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        messages += reader.feed(data[start:cut])
        start = cut
    return messages


def payloads(max_small: int = 300) -> st.SearchStrategy[bytes]:
    """Mostly small payloads; sometimes one just over the 16-bit length encoding's range."""
    small = st.binary(max_size=max_small)
    large = st.builds(lambda n, b: bytes([b]) * n, st.integers(65_536, 66_000), st.integers(0, 255))
    return st.one_of(small, small, small, large)


def encodings_for(payload: bytes) -> st.SearchStrategy[int]:
    """Every length encoding that can carry ``payload`` (receivers accept non-minimal ones)."""
    length = len(payload)
    return st.sampled_from(
        [
            e
            for e in (7, 16, 64)
            if not (e == 7 and length > 125) and not (e == 16 and length >= 1 << 16)
        ]
    )


@st.composite
def wire_frame(draw: st.DrawFn, opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return server_frame(opcode, payload, fin=fin, encoding=draw(encodings_for(payload)))


@st.composite
def control_frame(draw: st.DrawFn) -> bytes:
    opcode = draw(st.sampled_from([OP_PING, OP_PONG]))
    return draw(wire_frame(opcode, draw(st.binary(max_size=125))))


@st.composite
def data_message(draw: st.DrawFn) -> bytes:
    """A text or binary message, maybe fragmented, maybe with pings/pongs between fragments."""
    binary = draw(st.booleans())
    # (text must be UTF-8: coinfeed fails anything else with 1007, websockets' sans-I/O parser
    # leaves that to its message assembler; see the UTF-8 tests below)
    whole = draw(payloads()) if binary else draw(st.text(max_size=100)).encode()
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=4)))
    pieces = [whole[a:b] for a, b in zip([0, *cuts], [*cuts, len(whole)], strict=True)]
    out = []
    for index, piece in enumerate(pieces):
        opcode = (OP_BINARY if binary else OP_TEXT) if index == 0 else OP_CONTINUATION
        out.append(draw(wire_frame(opcode, piece, fin=index == len(pieces) - 1)))
        if index < len(pieces) - 1:
            out += draw(st.lists(control_frame(), max_size=2))
    return b"".join(out)


@st.composite
def server_stream(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """Valid server frames, sometimes ending in a close frame; then (after a close only) bytes
    the reader must not look at."""
    frames = draw(st.lists(st.one_of(data_message(), data_message(), control_frame()), max_size=8))
    after = b""
    if draw(st.booleans()):
        code = draw(st.sampled_from([1000, 1001, 1011, 3000, 4999]))
        reason = draw(st.text(max_size=20)).encode()[:100]
        frames.append(server_frame(OP_CLOSE, struct.pack("!H", code) + reason))
        after = draw(st.binary(max_size=20) | data_message())
    return b"".join(frames), after


@settings(max_examples=300, deadline=None)
@given(data=st.data(), frames=server_stream())
def test_reader_agrees_with_websockets_however_the_bytes_are_cut(
    data: st.DataObject, frames: tuple[bytes, bytes]
) -> None:
    valid, after_close = frames
    expected_messages, expected_controls = reference_parse(valid)
    stream = valid + after_close
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    reader = FrameReader(LIMIT)
    messages = feed_chunks(reader, stream, cuts)
    assert messages == expected_messages
    assert [(c.opcode, c.payload) for c in reader.controls] == expected_controls
    assert reader.buffered_bytes() == 0


@given(frames=server_stream())
@settings(max_examples=50, deadline=None)
def test_one_byte_at_a_time_gives_the_same_messages(frames: tuple[bytes, bytes]) -> None:
    stream = b"".join(frames)
    whole = FrameReader(LIMIT)
    bytewise = FrameReader(LIMIT)
    expected = whole.feed(stream)
    assert feed_chunks(bytewise, stream, list(range(len(stream)))) == expected
    assert bytewise.controls == whole.controls


# --- violations -----------------------------------------------------------------------------

MASK = b"\x01\x02\x03\x04"
VIOLATIONS = {
    "masked text frame": server_frame(OP_TEXT, b"hello", mask=MASK),
    "masked ping": server_frame(OP_PING, b"", mask=MASK),
    "masked 16-bit length": server_frame(OP_BINARY, b"x" * 200, mask=MASK),
    "rsv1": server_frame(OP_TEXT, b"hi", rsv=0x40),
    "rsv2": server_frame(OP_TEXT, b"hi", rsv=0x20),
    "rsv3": server_frame(OP_BINARY, b"hi", rsv=0x10),
    "rsv1 on a continuation": server_frame(OP_TEXT, b"a", fin=False)
    + server_frame(OP_CONTINUATION, b"b", rsv=0x40),
    **{f"opcode {op:#x}": server_frame(op, b"x") for op in (3, 4, 5, 6, 7)},
    **{f"opcode {op:#x}": server_frame(op, b"") for op in (0xB, 0xC, 0xD, 0xE, 0xF)},
    "fragmented ping": server_frame(OP_PING, b"p", fin=False),
    "fragmented close": server_frame(OP_CLOSE, b"\x03\xe8", fin=False),
    "ping of 126 bytes": server_frame(OP_PING, b"p" * 126),
    "pong of 200 bytes, 64-bit length": server_frame(OP_PONG, b"p" * 200, encoding=64),
    "continuation without a message": server_frame(OP_CONTINUATION, b"x"),
    "unfinished continuation without a message": server_frame(OP_CONTINUATION, b"x", fin=False),
    "text inside a fragmented message": server_frame(OP_TEXT, b"a", fin=False)
    + server_frame(OP_TEXT, b"b"),
    "binary inside a fragmented message": server_frame(OP_BINARY, b"a", fin=False)
    + server_frame(OP_CONTINUATION, b"b", fin=False)
    + server_frame(OP_BINARY, b"c", fin=False),
    "64-bit length with the top bit set": b"\x82\x7f" + struct.pack("!Q", (1 << 63) | 5) + b"x" * 5,
}


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("stream", VIOLATIONS.values(), ids=VIOLATIONS.keys())
def test_a_violation_fails_with_1002(stream: bytes, bytewise: bool) -> None:
    reader = FrameReader(LIMIT)
    preceding = server_frame(OP_TEXT, b"fine")
    if bytewise:
        with pytest.raises(FrameViolation) as raised:
            feed_chunks(reader, preceding + stream, list(range(len(preceding + stream))))
        violation = raised.value
    else:
        # The valid message before the violation in the same read is still delivered.
        assert reader.feed(preceding + stream) == [b"fine"]
        assert reader.violation is not None
        violation = reader.violation
    assert violation.code == 1002
    assert violation.reason
    assert reader.feed(server_frame(OP_TEXT, b"after")) == [], "nothing parsed after it"


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE, 0xB])
def test_a_long_control_frame_is_refused_from_its_header(opcode: int) -> None:
    """A ping claiming 1 MiB is refused (1002) as soon as its length is read, not buffered."""
    reader = FrameReader(LIMIT)
    header = bytes([0x80 | opcode, 127]) + struct.pack("!Q", 1 << 20)
    with pytest.raises(FrameViolation) as violation:
        reader.feed(header)
    assert violation.value.code == 1002


def test_the_top_bit_of_a_64_bit_length_is_refused_before_the_payload() -> None:
    reader = FrameReader(LIMIT)
    with pytest.raises(FrameViolation) as violation:
        reader.feed(b"\x81\x7f" + struct.pack("!Q", 1 << 63))
    assert violation.value.code == 1002


@pytest.mark.parametrize("encoding", [16, 64])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_a_frame_over_the_limit_is_refused_from_its_header_alone(
    encoding: int, opcode: int
) -> None:
    reader = FrameReader(max_message_bytes=1000)
    header = server_frame(opcode, b"x" * 1001, encoding=encoding)[: 4 if encoding == 16 else 10]
    reader.feed(header[:1])
    with pytest.raises(FrameViolation) as violation:
        reader.feed(header[1:])
    assert violation.value.code == 1009


def test_a_claimed_huge_length_is_refused_without_waiting() -> None:
    reader = FrameReader(max_message_bytes=LIMIT)
    with pytest.raises(FrameViolation) as violation:
        reader.feed(b"\x82\x7f" + struct.pack("!Q", 1 << 40))
    assert violation.value.code == 1009


def test_a_message_of_exactly_the_limit_is_delivered() -> None:
    reader = FrameReader(max_message_bytes=1000)
    body = bytes(range(250)) * 4
    assert reader.feed(server_frame(OP_BINARY, body)) == [body]
    text = ("é" * 500).encode()  # 1000 bytes of UTF-8: a text message must be valid
    assert reader.feed(
        server_frame(OP_TEXT, text[:401], fin=False) + server_frame(OP_CONTINUATION, text[401:])
    ) == [text]


def test_a_fragmented_message_over_the_limit_in_total_is_1009() -> None:
    reader = FrameReader(max_message_bytes=1000)
    fragments = [
        server_frame(OP_TEXT, b"a" * 400, fin=False),
        server_frame(OP_CONTINUATION, b"b" * 400, fin=False),
        server_frame(OP_PING, b"keepalive"),
        server_frame(OP_CONTINUATION, b"c" * 201),  # 1001 in total
    ]
    assert reader.feed(b"".join(fragments[:3])) == []
    with pytest.raises(FrameViolation) as violation:
        reader.feed(fragments[3])
    assert violation.value.code == 1009


# --- UTF-8 in text messages (RFC 6455 §8.1) -------------------------------------------------

NOT_UTF8 = {
    "0xff": b"\xff",
    "a lone continuation byte": b"ok \x80",
    "an overlong '/'": b"\xc0\xaf",
    "a surrogate half": b"\xed\xa0\x80",
    "above U+10FFFF": b"\xf4\x90\x80\x80",
    "cut short at the end": "price in €".encode()[:-1],
    "latin-1 in a JSON string": b'{"type":"trade","symbol_id":"CAF\xc9"}',
    "long, bad byte at the end": b"x" * 70_000 + b"\xfe",
}


def fragmented(opcode: int, payload: bytes, size: int) -> bytes:
    """``payload`` as a message in fragments of ``size`` bytes (cut anywhere, mid-character too),
    with a ping after the first fragment."""
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    frames = [
        server_frame(OP_CONTINUATION if i else opcode, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    ]
    frames.insert(1, server_frame(OP_PING, b"between"))
    return b"".join(frames)


@pytest.mark.parametrize("how", ["one frame", "fragments", "one frame bytewise"])
@pytest.mark.parametrize("payload", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_a_text_message_that_is_not_utf8_fails_with_1007(payload: bytes, how: str) -> None:
    reader = FrameReader(LIMIT)
    preceding = server_frame(OP_TEXT, "fine, 1 €".encode())
    bad = fragmented(OP_TEXT, payload, 3) if how == "fragments" else server_frame(OP_TEXT, payload)
    if how == "one frame bytewise":
        stream = preceding + bad
        with pytest.raises(FrameViolation) as raised:
            assert feed_chunks(reader, stream, list(range(len(stream)))) == []
        violation = raised.value
    else:
        # The valid message before it in the same read is still delivered.
        assert reader.feed(preceding + bad) == ["fine, 1 €".encode()]
        assert reader.violation is not None
        violation = reader.violation
    assert violation.code == 1007
    assert "UTF-8" in violation.reason
    assert reader.feed(server_frame(OP_TEXT, b"after")) == [], "nothing parsed after it"


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_utf8_cut_between_fragments_is_one_valid_message(size: int) -> None:
    """Only the whole message must be UTF-8: a fragment may end mid-character."""
    message = "€ 1,000 — Zürich — 東京 — 🪙".encode()
    reader = FrameReader(LIMIT)
    assert reader.feed(fragmented(OP_TEXT, message, size)) == [message]
    assert reader.violation is None


@pytest.mark.parametrize("payload", NOT_UTF8.values(), ids=NOT_UTF8.keys())
def test_a_binary_message_need_not_be_utf8(payload: bytes) -> None:
    reader = FrameReader(LIMIT)
    stream = server_frame(OP_BINARY, payload) + fragmented(OP_BINARY, payload, 3)
    assert reader.feed(stream) == [payload, payload]
    assert reader.violation is None


@settings(max_examples=300, deadline=None)
@given(
    payload=st.one_of(st.binary(max_size=40), st.text(max_size=20).map(str.encode)),
    size=st.integers(1, 50),
    whole=st.booleans(),
)
def test_a_text_message_is_delivered_exactly_when_it_is_utf8(
    payload: bytes, size: int, whole: bool
) -> None:
    try:
        payload.decode("utf-8")
        valid = True
    except UnicodeDecodeError:
        valid = False
    reader = FrameReader(LIMIT)
    stream = server_frame(OP_TEXT, payload) if whole else fragmented(OP_TEXT, payload, size)
    if valid:
        assert reader.feed(stream) == [payload]
    else:
        with pytest.raises(FrameViolation) as raised:
            reader.feed(stream)
        assert raised.value.code == 1007


# --- close ----------------------------------------------------------------------------------


def test_nothing_after_a_close_frame_is_returned() -> None:
    reader = FrameReader(LIMIT)
    close = server_frame(OP_CLOSE, struct.pack("!H", 1001) + b"going away")
    stream = (
        server_frame(OP_TEXT, b"before")
        + close
        + server_frame(OP_TEXT, b"after")
        + server_frame(OP_PING, b"late")
    )
    assert reader.feed(stream[:9]) == [b"before"]
    assert reader.feed(stream[9:]) == []
    assert reader.controls == [ControlFrame(OP_CLOSE, close[2:])]
    assert reader.feed(server_frame(OP_TEXT, b"later still")) == []
    assert reader.feed(b"\xff\xff garbage that is no frame") == []
    assert reader.controls == [ControlFrame(OP_CLOSE, close[2:])]
    assert reader.buffered_bytes() == 0


def test_parse_close() -> None:
    assert parse_close(b"") == (1005, "")
    assert parse_close(struct.pack("!H", 1001) + b"going away") == (1001, "going away")
    assert parse_close(struct.pack("!H", 4000) + "härte".encode()) == (4000, "härte")
    assert parse_close(struct.pack("!H", 1000)) == (1000, "")
    with pytest.raises(FrameViolation) as one_byte:
        parse_close(b"\x03")
    assert one_byte.value.code == 1002
    with pytest.raises(FrameViolation) as bad_utf8:
        parse_close(struct.pack("!H", 1000) + b"\xc3(")
    assert bad_utf8.value.code == 1007


@pytest.mark.parametrize("code", [1012, 1013, 1014, 3000, 4999])
def test_parse_close_takes_every_code_a_server_may_send(code: int) -> None:
    assert parse_close(struct.pack("!H", code) + b"bye") == (code, "bye")


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_parse_close_refuses_codes_that_must_not_be_sent(code: int) -> None:
    with pytest.raises(FrameViolation) as refused:
        parse_close(struct.pack("!H", code))
    assert refused.value.code == 1002
    assert str(code) in refused.value.reason


@pytest.mark.parametrize(
    "reason",
    ["", "protocol error", "x" * 200, "é" * 100, "€" * 60],
    ids=["empty", "short", "long ascii", "2-byte chars", "3-byte chars"],
)
def test_close_payload_fits_a_control_frame_and_parses_back(reason: str) -> None:
    payload = close_payload(1002, reason)
    assert len(payload) <= 125
    code, parsed = parse_close(payload)  # a reason cut mid-character would be a 1007 here
    assert code == 1002
    assert reason.startswith(parsed)
    assert len(parsed.encode()) > 120 or parsed == reason


# --- encoding client frames -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("opcode", "length"),
    [(op, n) for op in (OP_TEXT, OP_BINARY) for n in (0, 1, 125, 126, 65535, 65536)]
    + [(OP_PONG, 0), (OP_PONG, 125)],
)
def test_encode_frame_is_a_masked_frame_a_server_parses(opcode: int, length: int) -> None:
    payload = bytes(32 + i * 7 % 95 for i in range(length))  # ASCII: valid as text too
    key = b"\x9a\x00\xff\x37"
    frame = encode_frame(opcode, payload, mask=key)
    assert frame[0] == 0x80 | opcode
    assert frame[1] & 0x80, "client frames must be masked"
    size = frame[1] & 0x7F
    if length < 126:
        assert size == length
        offset = 2
    elif length < 65536:
        assert size == 126
        assert struct.unpack("!H", frame[2:4])[0] == length
        offset = 4
    else:
        assert size == 127
        assert struct.unpack("!Q", frame[2:10])[0] == length
        offset = 10
    assert frame[offset : offset + 4] == key
    masked = frame[offset + 4 :]
    assert len(masked) == length
    assert apply_mask(masked, key) == payload
    if length:
        assert masked != payload
    # websockets' server side (which insists on masking) reads the same frame back
    server = Protocol(Side.SERVER, state=State.OPEN, max_size=None)
    server.receive_data(frame)
    assert server.parser_exc is None
    [received] = server.events_received()
    assert isinstance(received, Frame)
    assert (int(received.opcode), bytes(received.data), received.fin) == (opcode, payload, True)


def test_encode_frame_picks_a_fresh_mask_each_time() -> None:
    frames = {encode_frame(OP_TEXT, b"same payload")[2:6] for _ in range(20)}
    assert len(frames) > 1


@given(payload=st.binary(max_size=300), key=st.binary(min_size=4, max_size=4))
def test_apply_mask_is_the_rfc_xor_and_undoes_itself(payload: bytes, key: bytes) -> None:
    masked = apply_mask(payload, key)
    assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    assert apply_mask(masked, key) == payload


# --- large messages in small reads ----------------------------------------------------------


def feed_in_reads(reader: FrameReader, stream: bytes, size: int) -> tuple[list[bytes], int]:
    """``stream`` fed in reads of ``size`` bytes: the messages, and the most bytes buffered."""
    messages: list[bytes] = []
    most_buffered = 0
    for start in range(0, len(stream), size):
        messages += reader.feed(stream[start : start + size])
        most_buffered = max(most_buffered, reader.buffered_bytes())
    return messages, most_buffered


def test_a_4_mib_frame_in_1_kib_reads_is_delivered_whole_with_bounded_buffering() -> None:
    body = bytes(range(256)) * (4 * 1024 * 4)  # 4 MiB
    stream = server_frame(OP_BINARY, body) + server_frame(OP_TEXT, b"next")
    reader = FrameReader(LIMIT)
    messages, most_buffered = feed_in_reads(reader, stream, 1024)
    assert messages == [body, b"next"]
    assert most_buffered <= len(body) + 10
    assert reader.buffered_bytes() == 0


def test_a_fragmented_4_mib_message_in_1_kib_reads_is_joined() -> None:
    body = bytes(range(256)) * (4 * 1024 * 4)
    fragment = 64 * 1024
    frames = [
        server_frame(
            OP_BINARY if i == 0 else OP_CONTINUATION,
            body[i : i + fragment],
            fin=i + fragment >= len(body),
        )
        for i in range(0, len(body), fragment)
    ]
    frames.insert(3, server_frame(OP_PING, b"mid-message"))
    stream = b"".join(frames)
    reader = FrameReader(LIMIT)
    messages, most_buffered = feed_in_reads(reader, stream, 1024)
    assert messages == [body]
    assert reader.controls == [ControlFrame(OP_PING, b"mid-message")]
    assert most_buffered <= len(body) + fragment
    assert reader.buffered_bytes() == 0
