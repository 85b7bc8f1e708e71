"""A tar.zst of a variant shares most of its bytes with the image it varies.

Images are mostly variants of a few bases. A compressed stream that does not resynchronise after
a change differs in every byte after it, which defeats a repository that stores chunks once,
rsync and zsync alike. generate packs tar.zst with zstd's --rsyncable for that reason.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from rain.generate.artifact import pack_tar_zst

pytestmark = pytest.mark.integration


def text(size: int, seed: int) -> bytes:
    """Compressible bytes that do not repeat (words drawn at random)."""
    rnd = random.Random(seed)
    words = [bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(4000)]
    return b" ".join(rnd.choices(words, k=size // 5))[:size]


def shared_samples(base: bytes, variant: bytes, samples: int = 100, size: int = 4096) -> int:
    """How many of `samples` slices of the variant, spread evenly over it, occur verbatim somewhere
    in the base (at any offset: the variant's bytes are shifted)."""
    step = len(variant) // (samples + 1)
    return sum(base.find(variant[i * step:i * step + size]) >= 0 for i in range(1, samples + 1))


def test_a_change_early_in_an_image_leaves_most_of_its_tar_zst_unchanged(tmp_path: Path):
    root = tmp_path / "root"
    (root / "usr/share/doc").mkdir(parents=True)
    for i in range(40):  # 40 MiB of files, packed in name order
        (root / f"usr/share/doc/f{i:02}.txt").write_bytes(text(1 << 20, i))
    pack_tar_zst(root, tmp_path / "base.tar.zst")
    (root / "usr/share/doc/f01.txt").write_bytes(b"one more line\n" + text(1 << 20, 1))  # the variant
    pack_tar_zst(root, tmp_path / "variant.tar.zst")

    base, variant = (tmp_path / "base.tar.zst").read_bytes(), (tmp_path / "variant.tar.zst").read_bytes()
    assert base != variant
    # zstd restarts every few MiB of input (its job size), so a variant differs in about that much
    # around each change: here 14 bytes in the second of 40 MiB, and the end of the archive
    shared = shared_samples(base, variant)
    assert shared >= 60, f"only {shared} % of the variant occurs in the base: the stream did not resynchronise"
