"""The base cache: built once under a lock, shared by builds, published whole, pruned only when idle."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from rain.generate.cache import Cache, CacheKind


def fresh_with(calls: list[int]) -> Any:
    def fresh(tmp: Path) -> dict[str, str]:
        calls.append(1)
        (tmp / "etc").mkdir()
        (tmp / "etc" / "os-release").write_text("ID=debian\n")
        return {"mirror": "http://mirror.example.test/debian"}
    return fresh


def test_a_base_is_built_once_and_then_shared(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path), []
    with ExitStack() as a, ExitStack() as b:
        path1, cached1 = cache.acquire_base("k", a, fresh_with(calls))
        path2, cached2 = cache.acquire_base("k", b, fresh_with(calls))  # shared lock: no waiting
    assert (cached1, cached2, len(calls)) == (False, True, 1)
    assert path1 == path2 and (path1 / "etc/os-release").read_text() == "ID=debian\n"
    assert cache.base_meta("k")["mirror"] == "http://mirror.example.test/debian"


def test_using_a_base_marks_it_used_without_touching_its_tree(tmp_path: Path) -> None:
    """A second build takes the base while the first tars it to a builder VM: tar fails ("file changed as
    we read it") when the tree's directory times change under it, so only the base's .json is touched."""
    cache = Cache(tmp_path)
    with ExitStack() as undo:
        base, _ = cache.acquire_base("k", undo, fresh_with([]))
    old = time.time() - 7 * 86400
    os.utime(base, (old, old))
    os.utime(base.with_name("k.json"), (old, old))
    before = base.stat()
    tar = subprocess.Popen(["tar", "-C", str(base), "-cf", "/dev/null", "--checkpoint=1",
                            "--checkpoint-action=sleep=1", "."])
    time.sleep(0.3)
    with ExitStack() as undo:
        assert cache.acquire_base("k", undo, fresh_with([]))[1] is True
    assert tar.wait() == 0, "tar of the base failed while another build took it"
    assert (base.stat().st_mtime_ns, base.stat().st_ctime_ns) == (before.st_mtime_ns, before.st_ctime_ns)
    (entry,) = cache.entries()
    assert time.time() - entry.last_used < 60, "the use was recorded"
    assert cache.prune(older_than=86400) == [], "a base just used is not pruned as idle"


def test_a_failed_bootstrap_leaves_no_half_base(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def broken(tmp: Path) -> dict[str, str]:
        (tmp / "half").write_text("x")
        raise RuntimeError("mirror went away")

    with ExitStack() as undo, pytest.raises(RuntimeError):
        cache.acquire_base("k", undo, broken)
    assert [p.name for p in cache.dir(CacheKind.BASES).iterdir() if not p.name.endswith(".lock")] == []
    with ExitStack() as undo:
        assert cache.acquire_base("k", undo, fresh_with([]))[1] is False


def test_parallel_builds_of_one_base_bootstrap_it_once(tmp_path: Path) -> None:
    cache, calls, results = Cache(tmp_path), [], []

    def one() -> None:
        with ExitStack() as undo:
            results.append(cache.acquire_base("k", undo, fresh_with(calls))[1])

    threads = [threading.Thread(target=one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and sorted(results) == [False, True, True, True]


def test_no_cache_rebuilds_the_base(tmp_path: Path) -> None:
    cache, calls = Cache(tmp_path), []
    for _ in range(2):
        with ExitStack() as undo:
            cache.acquire_base("k", undo, fresh_with(calls), use_cache=False)
    assert len(calls) == 2


def test_list_and_prune_leave_a_base_in_use_alone(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with ExitStack() as undo:
        cache.acquire_base("busy", undo, fresh_with([]))
        with ExitStack() as other:
            cache.acquire_base("idle", other, fresh_with([]))
        (cache.result_dir("abc")).mkdir(parents=True)
        (cache.result_dir("abc") / "manifest.json").write_text('{"name": "x", "artifacts": []}')
        assert {(e.kind, e.key) for e in cache.entries()} == {
            (CacheKind.BASES, "busy"), (CacheKind.BASES, "idle"), (CacheKind.RESULTS, "abc")}
        gone = cache.prune()
        assert {e.key for e in gone} == {"idle", "abc"}
        assert cache.base_dir("busy").is_dir() and not cache.base_dir("idle").exists()
    assert [e.key for e in cache.prune([CacheKind.BASES])] == ["busy"]


def test_a_base_image_for_builder_vms_is_made_once_and_goes_with_its_base(tmp_path: Path) -> None:
    """The squashfs a qemu builder mounts is the base's own: made once from its tree (file capabilities
    kept), counted in the base's entry, remade when the base is bootstrapped again, pruned with it."""
    cache = Cache(tmp_path)
    with ExitStack() as undo:
        base, _ = cache.acquire_base("k", undo, fresh_with([]))
        (base / "ping").write_bytes(b"\x7fELF")
        subprocess.run(["setcap", "cap_net_raw=ep", str(base / "ping")], check=True)
        image = cache.base_image("k")
        made = image.stat().st_mtime_ns
        assert cache.base_image("k") == image and image.stat().st_mtime_ns == made, "made once"
    listing = subprocess.run(["unsquashfs", "-lls", "-xattrs", str(image)], capture_output=True, text=True,
                             check=True).stdout
    assert "squashfs-root/etc/os-release" in listing and "squashfs-root/ping" in listing
    xattrs = subprocess.run(["unsquashfs", "-d", str(tmp_path / "out"), str(image)], capture_output=True)
    assert xattrs.returncode == 0
    assert "cap_net_raw=ep" in subprocess.run(["getcap", str(tmp_path / "out/ping")], capture_output=True,
                                              text=True).stdout
    (entry,) = cache.entries()
    assert entry.key == "k" and entry.size >= image.stat().st_size, "one entry, the image counted in it"
    with ExitStack() as undo:
        cache.acquire_base("k", undo, fresh_with([]), use_cache=False)
        assert not image.exists(), "a new base drops the image made from the old one"
        cache.base_image("k")
    assert [e.key for e in cache.prune()] == ["k"]
    assert sorted(p.name for p in (tmp_path / "bases").iterdir() if not p.name.startswith(".")) == []
