"""Frame codec properties: round trip, corruption rejected, resync after garbage."""

from __future__ import annotations

import tracemalloc
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import protocol as p

SETTINGS = settings(max_examples=60, deadline=None)
payloads = st.binary(max_size=600)
headers = st.tuples(
    st.sampled_from(list(p.Msg)), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)
)


def host_decoder(**kw) -> p.FrameDecoder:
    return p.FrameDecoder(own_direction=0, **kw)


def device_frame(payload: bytes, type: int = p.Msg.STATUS, session: int = 7, seq: int = 1):
    return p.encode_frame(type, payload, session=session, seq=seq, flags=p.FLAG_FROM_DEVICE)


@SETTINGS
@given(st.binary(max_size=2000))
def test_cobs_round_trip_has_no_zero(data):
    encoded = p.cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert p.cobs_decode(encoded) == data


@SETTINGS
@given(payloads, headers)
def test_frame_round_trip(payload, header):
    type, session, seq = header
    frames = host_decoder().feed(device_frame(payload, type, session, seq))
    assert frames == [p.Frame(type, p.FLAG_FROM_DEVICE, session, seq, payload)]


@SETTINGS
@given(payloads, st.data())
def test_every_single_bit_flip_is_rejected(payload, data):
    wire = bytearray(device_frame(payload))
    # every bit of the frame body, sampled (all of them for short frames)
    positions = range(1, len(wire) - 1)
    picks = data.draw(st.lists(st.sampled_from(positions), min_size=1, max_size=40))
    for pos in picks:
        for bit in range(8):
            bad = bytearray(wire)
            bad[pos] ^= 1 << bit
            assert host_decoder().feed(bytes(bad)) == [], (pos, bit)


def test_all_bit_flips_of_one_frame_rejected():
    wire = device_frame(b"flash me")
    for pos in range(1, len(wire) - 1):
        for bit in range(8):
            bad = bytearray(wire)
            bad[pos] ^= 1 << bit
            assert host_decoder().feed(bytes(bad)) == []


@SETTINGS
@given(st.lists(payloads, min_size=1, max_size=5), st.lists(st.binary(max_size=300), max_size=6))
def test_garbage_between_frames_is_ignored(frames, garbage):
    boot_log = b"[    0.000000] Booting Linux on physical CPU 0x0\r\njetson login: "
    stream = boot_log
    for i, payload in enumerate(frames):
        stream += device_frame(payload, seq=i) + (garbage[i] if i < len(garbage) else b"")
    got = host_decoder().feed(stream)
    # garbage may at most cost the frame it runs into when it lacks a delimiter
    assert [f.payload for f in got] == frames


@SETTINGS
@given(payloads, st.integers(1, 64))
def test_byte_at_a_time_feeding(payload, split):
    wire = device_frame(payload)
    dec = host_decoder()
    got = []
    for i in range(0, len(wire), split):
        got += dec.feed(wire[i : i + split])
    assert [f.payload for f in got] == [payload]


def test_own_echo_and_stale_session_dropped():
    dec = host_decoder()
    dec.session = 7
    echo = p.encode_frame(p.Msg.DATA, b"x" * 9, session=7, seq=1)  # host direction: ours
    stale = device_frame(b"{}", session=6)
    assert dec.feed(echo + stale + device_frame(b"{}")) == [
        p.Frame(p.Msg.STATUS, p.FLAG_FROM_DEVICE, 7, 1, b"{}")
    ]
    assert dec.dropped == {"own echo": 1, "stale session": 1}


def test_length_mismatch_rejected():
    raw = p.HEADER.pack(p.FRAME_VERSION, p.Msg.PING, p.FLAG_FROM_DEVICE, 0, 1, 1, 5) + b"abc"
    wire = b"\x00" + p.cobs_encode(raw + p.CRC.pack(zlib.crc32(raw))) + b"\x00"
    dec = host_decoder()
    assert dec.feed(wire) == []
    assert dec.dropped == {"length mismatch": 1}


@pytest.mark.parametrize("declared", [2**31, 2**32 - 1])
def test_huge_declared_length_costs_nothing(declared):
    """A header claiming gigabytes is refused from what arrived, never allocated."""
    raw = (
        p.HEADER.pack(p.FRAME_VERSION, p.Msg.DATA, p.FLAG_FROM_DEVICE, 0, 1, 1, declared) + b"x" * 8
    )
    wire = b"\x00" + p.cobs_encode(raw + p.CRC.pack(zlib.crc32(raw))) + b"\x00"
    dec = host_decoder()
    block = b"\x01" * (1 << 20)  # an endless frame (no delimiter), fed 1 MiB at a time
    tracemalloc.start()
    assert dec.feed(wire) == []
    for _ in range(10):
        assert dec.feed(block) == []
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < (1 << 20) // 2  # far below one block: nothing proportional was kept
    assert dec.dropped["oversize"] >= 1
    assert dec.feed(device_frame(b"ok")) != []  # back in sync after the next delimiter


def test_partial_frame_times_out():
    wire = device_frame(b"late")
    dec = host_decoder(partial_timeout=0.5)
    assert dec.feed(wire[:-5], now=100.0) == []
    assert dec.feed(wire[-5:], now=101.0) == []  # tail arrives after the timeout
    assert dec.dropped["partial timeout"] == 1
    assert dec.feed(wire, now=101.1)[0].payload == b"late"


@SETTINGS
@given(st.binary(max_size=8192), st.integers(0, 2**40))
def test_data_payload_round_trip_with_compression(chunk, offset):
    payload, flags = p.data_payload(offset, chunk, compress=True)
    assert len(payload) <= len(chunk) + 8
    frame = p.Frame(p.Msg.DATA, flags, 1, 1, payload)
    assert p.parse_data(frame, 8192) == (offset, chunk)


def test_compressed_data_cannot_expand_past_limit():
    payload, flags = p.data_payload(0, bytes(100_000), compress=True)
    assert flags & p.FLAG_COMPRESSED
    with pytest.raises(ValueError):
        p.parse_data(p.Frame(p.Msg.DATA, flags, 1, 1, payload), 8192)


def test_corrupt_compressed_data_is_a_bad_request_not_a_crash():
    """zlib's own error must not escape: an uncaught one would restart the agent (and cost a
    TEST build one of its attempts)."""
    payload, flags = p.data_payload(0, b"semedge" * 100, compress=True)
    broken = payload[: p.DATA_HEADER.size] + b"\xff" * (len(payload) - p.DATA_HEADER.size)
    with pytest.raises(ValueError, match="bad compressed DATA"):
        p.parse_data(p.Frame(p.Msg.DATA, flags, 1, 1, broken), 8192)
