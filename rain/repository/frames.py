"""Where a stream of independent zstd frames may be cut: after whole frames only.

A tar.zst that Rain writes (rain.image.tarball) is not one zstd frame but many,
each about 1 MiB of the tar compressed on its own, cut where the tar's content
says (the zchunk idea). A package added to an image then changes only the frames
that hold its files. Cutting such a file into repository chunks at frame ends
keeps that: a chunk is a run of whole frames, so an unchanged frame always lands
in an unchanged chunk. FastCDC over the compressed bytes would instead spread
each change over a whole chunk of about 1 MiB of compressed bytes (about 3 MiB
of tar), three times as much.

Only the frame and block headers are read (RFC 8878, sections 3.1.1 and
3.1.1.2), never the content. Anything else (a single large frame as plain
`zstd` writes, a skippable frame, damage) makes runs() say so, and the caller
cuts the rest with FastCDC as for any file.
"""

from __future__ import annotations

MAGIC = b"\x28\xb5\x2f\xfd"
_DICT_ID = (0, 1, 2, 4)
_CONTENT_SIZE = (0, 2, 4, 8)  # by Frame_Content_Size_flag; flag 0 with a single segment: 1 byte
_RESERVED_BLOCK = 3
_RLE_BLOCK = 1


def starts_frame(data: bytes) -> bool:
    return data[:4] == MAGIC


def frame_end(buf: bytes, pos: int, limit: int) -> int | None:
    """The offset just past the zstd frame that starts at buf[pos]; None when buf ends before the frame
    does; -1 when buf[pos:] is not a zstd frame or the frame is longer than `limit` bytes."""
    n = len(buf)
    if n - pos < 5:
        return None if MAGIC.startswith(buf[pos:n]) else -1
    if buf[pos:pos + 4] != MAGIC:
        return -1
    descriptor = buf[pos + 4]
    if descriptor & 0x08:  # the reserved bit: not a frame this reader knows
        return -1
    single = descriptor & 0x20
    content = _CONTENT_SIZE[descriptor >> 6] or (1 if single else 0)
    p = pos + 5 + (0 if single else 1) + _DICT_ID[descriptor & 0x03] + content
    checksum = 4 if descriptor & 0x04 else 0
    while True:
        if p - pos > limit:
            return -1
        if p + 3 > n:
            return None
        header = int.from_bytes(buf[p:p + 3], "little")
        kind = (header >> 1) & 0x03
        if kind == _RESERVED_BLOCK:
            return -1
        p += 3 + (1 if kind == _RLE_BLOCK else header >> 3)
        if header & 0x01:  # Last_Block
            break
    p += checksum
    if p - pos > limit:
        return -1
    return p if p <= n else None


def runs(buf: bytes, minimum: int, maximum: int, final: bool) -> tuple[list[int], bool]:
    """Cuts for buf, which starts at a frame: each chunk is a run of whole frames, ended after the frame
    that makes it `minimum` bytes or more, and never more than `maximum`. Returns (the cut offsets, True
    while buf is still frames); with final, the last cut is len(buf). On False the bytes after the last
    cut are not frames (or a frame is over `maximum`): cut them another way."""
    cuts: list[int] = []
    start = pos = 0
    n = len(buf)
    while pos < n:
        end = frame_end(buf, pos, maximum)
        if end is None:
            return cuts, not final
        if end > 0 and end - start > maximum and pos > start:
            cuts.append(pos)  # the run so far is short, but this frame would take it past the maximum
            start = pos
        if end < 0 or end - start > maximum:
            return cuts, False
        pos = end
        if pos - start >= minimum:
            cuts.append(pos)
            start = pos
    if final and start < n:
        cuts.append(n)
    return cuts, True
