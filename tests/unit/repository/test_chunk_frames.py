"""The repository cuts a stream of independent zstd frames after whole frames, and anything else by FastCDC.

A chunk that ends inside a frame would be spoilt by any change to that frame's neighbours, and a variant
of a tar.zst Rain wrote would then store about three times the bytes it changed."""

from __future__ import annotations

import io
import random

import pytest
import zstandard
from fastcdc.fastcdc_cy import fastcdc_cy

from rain.errors import IntegrityError
from rain.image.tarball import compress_frames
from rain.repository import frames
from rain.repository.chunks import AVERAGE, MAXIMUM, MINIMUM, cut

MiB = 1 << 20


def text(size: int, seed: int) -> bytes:
    """Compressible bytes that do not repeat: words drawn at random."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(3000)]
    return b" ".join(rnd.choices(words, k=size // 5))[:size]


def framed(data: bytes) -> bytes:
    out = io.BytesIO()
    compress_frames(io.BytesIO(data), out)
    return out.getvalue()


def pieces(data: bytes) -> list[bytes]:
    return list(cut(io.BytesIO(data), len(data), lambda _: None))


def frame_ends(data: bytes) -> set[int]:
    ends, pos = set(), 0
    while pos < len(data):
        pos = frames.frame_end(data, pos, len(data))
        assert pos is not None and pos > 0
        ends.add(pos)
    return ends


def test_a_framed_stream_is_cut_after_whole_frames_each_of_which_decompresses_alone():
    plain = text(24 * MiB, 1)
    data = framed(plain)
    got = pieces(data)
    assert b"".join(got) == data
    assert len(got) > 12, "frames of about 1 MiB of text should make many chunks"
    offsets, at = [], 0
    for piece in got:
        at += len(piece)
        offsets.append(at)
    assert set(offsets) <= frame_ends(data), "a chunk ends inside a frame"
    assert all(MINIMUM <= len(p) <= MAXIMUM for p in got[:-1])
    reader = zstandard.ZstdDecompressor()
    alone = [reader.stream_reader(io.BytesIO(p), read_across_frames=True).read() for p in got]
    assert b"".join(alone) == plain  # each chunk decompresses without the others


def test_a_change_to_one_frame_leaves_the_other_chunks_as_they_were():
    plain = text(24 * MiB, 2)
    changed = plain[:12 * MiB] + b"one more line\n" + plain[12 * MiB:]
    before, after = set(pieces(framed(plain))), pieces(framed(changed))
    new = sum(len(p) for p in after if p not in before)
    assert 0 < new <= 2 * MAXIMUM // 4, f"{new} bytes of new chunks for a 14-byte insertion"


def test_one_large_frame_is_cut_as_plain_zstd_writes_it_by_fastcdc():
    data = zstandard.ZstdCompressor(level=1).compress(text(12 * MiB, 3))
    assert len(data) > MAXIMUM
    expected = [data[p.offset:p.offset + p.length] for p in fastcdc_cy(data, MINIMUM, AVERAGE, MAXIMUM)]
    assert pieces(data) == expected


def test_bytes_that_stop_being_frames_are_cut_by_fastcdc_from_there():
    head = framed(text(6 * MiB, 4))
    tail = random.Random(5).randbytes(5 * MiB)
    got = pieces(head + tail)
    assert b"".join(got) == head + tail
    at, offsets = 0, []
    for piece in got:
        at += len(piece)
        offsets.append(at)
    before = [o for o in offsets if o <= len(head)]
    assert before and set(before) <= frame_ends(head)
    assert len(got) - len(before) >= 2, "the random tail was not cut by content"


def test_a_truncated_or_damaged_frame_is_not_taken_for_one():
    frame = zstandard.ZstdCompressor(level=3).compress(text(MiB, 6))
    assert frames.frame_end(frame, 0, MAXIMUM) == len(frame)
    assert frames.frame_end(frame[:-10], 0, MAXIMUM) is None  # more bytes may come
    assert frames.frame_end(frame[:3], 0, MAXIMUM) is None
    assert frames.frame_end(b"\x28\xb5\x2f\xfc" + frame[4:], 0, MAXIMUM) == -1  # not the magic
    reserved = bytearray(frame)
    reserved[4] |= 0x08
    assert frames.frame_end(bytes(reserved), 0, MAXIMUM) == -1
    assert frames.frame_end(frame, 0, len(frame) - 1) == -1  # longer than the limit
    assert frames.runs(frame[:-10], MINIMUM, MAXIMUM, final=True) == ([], False)
    data = frame[:-10]
    assert b"".join(pieces(data)) == data  # a truncated last frame: still every byte, cut by FastCDC


def test_the_declared_size_still_binds_a_framed_stream():
    data = framed(text(2 * MiB, 7))
    with pytest.raises(IntegrityError, match="more than the declared"):
        list(cut(io.BytesIO(data + b"x"), len(data), lambda _: None))
    with pytest.raises(IntegrityError, match="ended after"):
        list(cut(io.BytesIO(data[:-5]), len(data), lambda _: None))
