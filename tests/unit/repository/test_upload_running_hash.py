"""A delta upload's whole-file sha256, taken as its chunks arrive in file order (rain.repository.running)."""

from __future__ import annotations

import hashlib

from rain.repository import running


def pieces(*parts: bytes) -> list[tuple[str, bytes]]:
    return [(hashlib.sha256(p).hexdigest(), p) for p in parts]


def test_batches_arriving_out_of_order_are_hashed_in_file_order():
    a, b, c = pieces(b"a" * 10, b"b" * 20, b"c" * 5)
    running.arrived("u1", 30, [c])  # early: kept
    running.arrived("u1", 0, [a])
    running.arrived("u1", 10, [b])  # continues the run, and the early batch after it
    digest, hashed, done = running.take("u1", [a[0], b[0], c[0]])
    assert (hashed, done) == (3, 35)
    assert digest.hexdigest() == hashlib.sha256(b"a" * 10 + b"b" * 20 + b"c" * 5).hexdigest()
    assert running.take("u1", [a[0], b[0], c[0]]) is None  # taken once: the upload is forgotten


def test_a_run_counts_only_for_a_commit_that_begins_with_exactly_its_chunks():
    a, b = pieces(b"a" * 10, b"b" * 20)
    running.arrived("u2", 0, [b])  # a client that says the second chunk begins the file
    running.arrived("u2", 20, [a])
    assert running.take("u2", [a[0], b[0]]) is None  # the commit's order differs: everything is read back


def test_what_a_run_cannot_use_is_not_kept_without_bound():
    big = [("0" * 64, b"x" * (running.EARLY_BYTES_MAX // 2 + 1))]
    running.arrived("u3", 0, pieces(b"first"))
    running.arrived("u3", 1000, big)
    running.arrived("u3", 10_000_000, big)  # past the early bound: dropped, not kept
    running.arrived("u3", 2, pieces(b"overlap"))  # behind the run: ignored
    digest, hashed, done = running.take("u3", [pieces(b"first")[0][0]])
    assert (hashed, done) == (1, 5)
    for n in range(running.UPLOADS_MAX + 5):
        running.arrived(f"many-{n}", 0, pieces(b"z"))
    assert running.take("many-0", [pieces(b"z")[0][0]]) is None  # the oldest forgotten
    assert running.take(f"many-{running.UPLOADS_MAX + 4}", [pieces(b"z")[0][0]]) is not None


def test_early_batches_of_all_uploads_together_stay_within_a_global_bound():
    """Clients naming far offsets for many uploads at once cannot make the service hold their bytes."""
    piece = [("1" * 64, b"y" * (running.EARLY_BYTES_MAX - 1))]
    held = 0
    for n in range(running.EARLY_TOTAL_MAX // running.EARLY_BYTES_MAX + 3):
        running.arrived(f"far-{n}", 1 << 40, piece)
        held = running._early_total
    assert held <= running.EARLY_TOTAL_MAX
    for n in range(running.EARLY_TOTAL_MAX // running.EARLY_BYTES_MAX + 3):
        running.forget(f"far-{n}")
    assert running._early_total == 0  # forgotten uploads give their share back
