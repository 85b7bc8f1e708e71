"""Reading an image's initramfs without running it: what register decides a rebuild by.

A wrong answer either rebuilds for nothing (image code runs in the sandbox, minutes under TCG) or,
worse, skips a rebuild the cloud needs (the VM never finds its disk); a crafted initramfs must make
the reader give up, never hang it or fill memory.
"""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import zstandard
from support.images import cpio

from rain.image import initramfs
from rain.image.rootfs import RootFS

KVER = "6.1.0-9-amd64"


def mod(name: str, kver: str = KVER) -> str:
    return f"usr/lib/modules/{kver}/kernel/drivers/block/{name}.ko"


def test_debian_layout_early_microcode_then_a_compressed_main_archive_is_listed_whole():
    early = cpio("kernel/x86/microcode/GenuineIntel.bin") + b"\0" * 300  # padded, as initramfs-tools does
    for compress in (zstandard.ZstdCompressor().compress, gzip.compress,
                     lambda b: lzma.compress(b, format=lzma.FORMAT_XZ)):
        names = initramfs.listing(early + compress(cpio("init", mod("virtio_blk"), mod("nvme") + ".zst")))
        assert names == ["kernel/x86/microcode/GenuineIntel.bin", "init", mod("virtio_blk"), mod("nvme") + ".zst"]


def test_module_names_match_the_kernel_version_and_fold_dashes():
    names = [mod("virtio-blk"), mod("ena", "5.10.0-1-amd64"), "usr/lib/modules/readme.txt", mod("nvme") + ".xz"]
    assert initramfs.module_names(names, KVER) == {"virtio_blk", "nvme"}


def test_unknown_compression_truncation_and_lies_mean_cannot_tell():
    good = cpio("init", mod("virtio_blk"))
    assert initramfs.listing(b"BZh91AY&SY" + good) is None  # bzip2: not read
    assert initramfs.listing(good[:150]) is None  # cut inside the archive
    lying = bytearray(cpio("init"))
    lying[6 + 8 * 6:14 + 8 * 6] = b"7fffffff"  # the first entry claims 2 GiB of data the file does not have
    assert initramfs.listing(bytes(lying)) is None
    huge_name = bytearray(good)
    huge_name[6 + 8 * 11:14 + 8 * 11] = b"00100000"
    assert initramfs.listing(bytes(huge_name)) is None


def test_a_decompression_bomb_stops_at_the_bound(monkeypatch):
    monkeypatch.setattr(initramfs, "MAX_UNPACKED", 1 << 20)
    bomb = zstandard.ZstdCompressor().compress(cpio("big", body=b"\0" * (4 << 20)))
    assert len(bomb) < 4096
    assert initramfs.listing(bomb) is None


def _image(tmp_path: Path, initrd: bytes, builtin: str = "", dep: str = "") -> RootFS:
    root = tmp_path / "root"
    (root / "boot").mkdir(parents=True)
    (root / f"usr/lib/modules/{KVER}").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    (root / f"boot/initrd.img-{KVER}").write_bytes(initrd)
    (root / f"usr/lib/modules/{KVER}/modules.builtin").write_text(builtin)
    (root / f"usr/lib/modules/{KVER}/modules.dep").write_text(dep)
    return RootFS(root)


def test_drivers_missing_are_those_neither_in_the_initramfs_nor_built_in(tmp_path):
    initrd = cpio("init", mod("virtio_blk"), mod("virtio_scsi"))
    tree = _image(tmp_path, zstandard.ZstdCompressor().compress(initrd),
                  builtin="kernel/drivers/virtio/virtio_pci.ko\n")
    wanted = ["virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net"]
    assert initramfs.missing_drivers(tree, KVER, f"/boot/initrd.img-{KVER}", wanted) == ["virtio_net"]


def test_an_initramfs_that_is_a_fifo_or_a_link_out_of_the_image_is_not_read(tmp_path):
    import os

    tree = _image(tmp_path, b"")
    path = tree.root / f"boot/initrd.img-{KVER}"
    path.unlink()
    os.mkfifo(path)  # reading it would block forever
    assert initramfs.missing_drivers(tree, KVER, f"/boot/initrd.img-{KVER}", ["nvme"]) is None
    path.unlink()
    path.symlink_to("/etc/shadow")  # resolved inside the image: there is no such file there
    assert initramfs.missing_drivers(tree, KVER, f"/boot/initrd.img-{KVER}", ["nvme"]) is None
