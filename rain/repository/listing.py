"""Listing the catalog from indexes, on any MongoDB-wire server, at 100,000 images and more.

MongoDB answers `find(filter).sort(created).limit(100)` by walking an index and
stopping after 100 documents. The embedded server (SecantusDB) plans otherwise:
it uses an index for equalities and ranges, but sorts and limits only after
fetching every match, and scans the whole collection for an `$or`. With 100,000
images, `fg-image list` took 4 to 6 s there, every time.

So a listing is made of queries that any server answers from an index:

- the access rule's `$or` (mine, public, shared with me) becomes one query per
  branch, each on its own compound index (`owner`, `visibility` or
  `shared_with`, then `created`), and the answers are merged here; a filter's
  equality that an index holds beside a branch (the OS family) joins its query;
- the default order, newest first, is read in slices of `created`, the newest
  slice first, until the page is full. Each slice is as long as the density of
  matches so far says the rest of the page needs (an empty stretch grows it
  `GROWTH`-fold); the same listing seen in the last minute starts with one
  slice as far back as that one reached. A slice is a range on the branch's
  index, and all of a newer slice sorts before all of an older one, so the
  slices are never re-sorted.

Cost grows with the images created in the newest slices that fill the page,
not with the catalog. The history (the events collection, which grows fastest:
every download adds one) is read the same way, in slices of `when`. Other
orders (by name, size, ...) merge whole branches, which a server without index
sorts does in memory.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.collection import Collection

FIRST_SLICE = timedelta(hours=1)
GROWTH = 8
OLDEST = timedelta(days=366 * 30)
"""Once the slices reach back this far, the last one takes whatever is older."""
INDEXES: list[list[tuple[str, int]]] = [
    [("created", -1), ("_id", 1)],  # an administrator's listing: every image
    [("owner", 1), ("created", -1)],
    [("visibility", 1), ("created", -1)],
    [("shared_with", 1), ("created", -1)],
    [("name", 1), ("created", -1)],
    [("parent", 1), ("created", -1)],
    [("tags", 1), ("created", -1)],
    # the OS family, the catalog's main facet, folded into the two branches that hold most images:
    # without them `list --os-family F` read four records for each one it showed
    [("visibility", 1), ("os.family", 1), ("created", -1)],
    [("os.family", 1), ("created", -1)],
    [("name_words", 1), ("created", -1)],  # the search: the starts of the name's words (name_words())
    [("registrations.target", 1), ("created", -1)],  # registered on a target
    [("status", 1), ("created", -1)],  # quarantined (failed vetting), a rare status
    [("verdict", 1), ("created", -1)],  # vetting passed or failed (verdict_of())
]
"""What `list` reads: created by ensure_indexes (a no-op once they exist)."""
EVENT_INDEXES: list[list[tuple[str, int]]] = [
    [("when", -1)],  # an administrator's history: every event
    [("user", 1), ("when", -1)],
    [("image_id", 1), ("when", -1)],
]
"""What `history` reads: the events collection grows by one record per upload, download, share..."""
BATCH = 1000
"""Records in a query's first answer: the driver's default, 101, took a second round trip for a page of 100."""
DRIVERS = ("name", "parent", "owner", "tags", "registrations.target", "name_words", "status", "verdict")
"""Filters selective enough to read the catalog by, before the access rule's branches (the first one a
listing has). `status` drives only when a listing asks for one status: a listing of every status but
uploading reads by the branches. `verdict` drives as "pass" or "fail"; "none" (never vetted, most
images) is asked as {"$eq": "none"}, which reads by the branches."""


def verdict_of(doc: dict[str, Any]) -> str:
    """A record's vetting verdict as the catalog filters by it (its `verdict` field, indexed): fail when
    quarantined for a target, pass when vetted and blocked for none, none when never vetted."""
    return "fail" if doc.get("quarantined") else "pass" if doc.get("vetting") else "none"


def page(images: Collection, branches: list[dict[str, Any]], filt: dict[str, Any], key: str,
         descending: bool, skip: int, limit: int, now: datetime,
         shown: list[str] | None = None, after: dict[str, Any] | None = None,
         before: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Documents skip..skip+limit of those matching `filt` and any one branch, in (key, _id) order.

    `branches` are the access rule's alternatives ([{}] for an administrator). `branches` and `filt`
    hold equalities (an array field matches when it holds the value) and {"$ne": v}. The server is
    only asked for an indexed equality and a range of `created`: the embedded server scans the whole
    collection for any query with a condition its index does not hold. The rest is checked here.
    `shown`: the fields of the records returned (None: whole).

    `after`, `before`: a record (its key and _id). Only those after it (before it) in this order count,
    and the page is the `limit` nearest it, skipping the `skip` nearest: the next (previous) page of a
    newest-first listing reads from the cursor on, as few records as the first page, where skipping
    read every record before the page (at 100,000 images, the web catalog's page 200 took 1.7 s)."""
    # a branch the filter rules out reads nothing (a user's `--visibility private` and the public branch)
    branches = [b for b in branches if not _contradicts(b, filt)]
    if not branches:
        return []
    by_filter = [{f: _driving(filt[f])} for f in DRIVERS if _driving(filt.get(f))][:1]
    drivers = [narrowed(d, filt) for d in by_filter or branches]

    def wanted(doc: dict[str, Any]) -> bool:
        if after is not None and not _follows(doc, after, key, descending):
            return False
        if before is not None and not _follows(before, doc, key, descending):
            return False
        if "name_words" in filt and "name_words" not in doc:  # read as the name: a tenth of the bytes
            doc = {**doc, "name_words": name_words(doc.get("name", ""))}
        return matches(doc, filt) and any(matches(doc, b) for b in branches)
    want = skip + limit
    deciding = {"_id", "created", key, *(p.split(".")[0] for c in [filt, *branches] for p in c)}
    if "name_words" in deciding:
        deciding = deciding - {"name_words"} | {"name"}
    back = before is not None  # read away from the cursor, nearest first: the page comes out reversed
    if key == "created" and descending:
        cursor = before if back else after
        edge = _utc(cursor["created"]) if cursor is not None and cursor.get("created") is not None else None
        shape = None if back else repr((sorted(filt.items()), branches))

        def read(fields: set[str] | None) -> list[dict[str, Any]]:
            if back:
                return oldest_first(images, drivers, fields, wanted, want, now, lower=edge)
            return newest_first(images, drivers, fields, wanted, want, now, shape=shape, upper=edge)
        if not by_filter or shown is None:
            # the records as shown, from the slices themselves: they read little more than the page, and one
            # more query for the page's records by `_id` cost the embedded server more than the slices did
            return _facing(read(None if shown is None else deciding | set(shown))[skip:want], back)
        # a filter drives: most records read are another user's, or fail another condition. They are read
        # with only the fields that decide, and the page's by `_id` (at 100,000 images, a search matching
        # 2% took 145 ms of a user's catalog page, 8 in 10 of them decoding whole records)
        docs = read(deciding)
    else:  # the candidates are read with only the fields that decide (a record's provenance can be large)
        docs = _facing(_sorted([d for d in _union(images, drivers, deciding) if wanted(d)], key, descending), back)
    ids = [d["_id"] for d in docs[skip:want]]
    projection = dict.fromkeys(shown, 1) if shown is not None else None
    whole = {d["_id"]: d for d in images.find({"_id": {"$in": ids}}, projection)} if ids else {}
    return _facing([whole[i] for i in ids if i in whole], back)  # one removed meanwhile is left out


def _facing(docs: list[dict[str, Any]], back: bool) -> list[dict[str, Any]]:
    return docs[::-1] if back else docs


def _follows(doc: dict[str, Any], cursor: dict[str, Any], key: str, descending: bool) -> bool:
    """Whether doc comes after cursor in (key, _id) order (_id ascending among equal keys; as _sorted)."""
    mine, theirs = _position(doc, key), _position(cursor, key)
    if mine != theirs:
        return mine < theirs if descending else mine > theirs
    return bool(doc["_id"] > cursor["_id"])


def _position(doc: dict[str, Any], key: str) -> tuple[bool, Any]:
    value = doc.get(key)
    if isinstance(value, datetime):
        value = _utc(value)
    return (value is not None, value if value is not None else 0)


SCALARS = ("owner", "visibility")
"""The access rule's fields that hold one value (`shared_with` holds several): a branch's equality on one
and the filter's on the same field with another value cannot both hold."""


def _contradicts(branch: dict[str, Any], filt: dict[str, Any]) -> bool:
    return any(f in SCALARS and isinstance(filt.get(f), str) and filt[f] != v for f, v in branch.items())


def _driving(cond: Any) -> str | None:
    """The equality a condition can read the catalog by: the value itself, or of {"$all": words} the last
    word of two characters or more (people type a search from the general to the particular: in
    `debian book` the last word finds fewer images), else the longest."""
    if isinstance(cond, str):
        return cond
    if isinstance(cond, dict) and cond.get("$all"):
        words: list[str] = cond["$all"]
        return next((w for w in reversed(words) if len(w) >= 2), max(words, key=len))
    return None


WORD_START_MAX = 24
"""The longest start of a word the search indexes: a longer search word is matched by its first 24."""


def words_of(text: str) -> list[str]:
    """The words of a name or a search: runs of letters and digits, lowercased, each cut to WORD_START_MAX."""
    return [w[:WORD_START_MAX] for w in re.findall(r"[a-z0-9]+", text.lower())]


def name_words(name: str) -> list[str]:
    """What the catalog's search finds an image by (its record's `name_words`, indexed): every start of
    every word of its name, so `book` finds debian-bookworm-kernel and `deb book` does too."""
    return sorted({word[:n] for word in words_of(name) for n in range(1, len(word) + 1)})


def narrowed(driver: dict[str, Any], filt: dict[str, Any]) -> dict[str, Any]:
    """The driver with the filter's equalities that one index holds together with it (and `created`):
    the server then reads only the records that match them."""
    best = driver
    for keys in INDEXES:
        fields = [f for f, _ in keys if f not in ("created", "_id")]
        if set(driver) <= set(fields) and len(fields) > len(best) and all(
                f in driver or isinstance(filt.get(f), str) for f in fields):
            best = {f: driver.get(f, filt.get(f)) for f in fields}
    return best


def _values(doc: Any, path: str) -> list[Any]:
    """What a dotted path reaches in a record; through an array of records it reaches each one's field
    (as MongoDB reads `registrations.target`). A missing field reaches None."""
    found = [doc]
    for part in path.split("."):
        step: list[Any] = []
        for value in found:
            if isinstance(value, dict):
                step.append(value.get(part))
            elif isinstance(value, list) and any(isinstance(v, dict) for v in value):
                step.extend(v.get(part) for v in value if isinstance(v, dict))
            else:
                step.append(None)
        found = step
    return found or [None]


def _meets(values: list[Any], op: str, arg: Any) -> bool:
    if op == "$ne":  # a scalar field unlike the value
        return all(v != arg for v in values)
    if op == "$eq":
        return any(v == arg or (isinstance(v, list) and arg in v) for v in values)
    if op == "$nonempty":  # a list or record that holds something (True), or nothing or is missing (False)
        return any(bool(v) for v in values) == arg
    if op == "$all":  # an array holding every one of the values
        return all(any(isinstance(v, list) and a in v for v in values) for a in arg)
    raise ValueError(f"listing condition {op} is not known")


def matches(doc: dict[str, Any], conditions: dict[str, Any]) -> bool:
    """Whether the record meets every condition: equalities on (dotted) fields, where an array field
    meets one if it holds the value, or a record of operators: $eq, $ne, $nonempty, $all. Only
    equalities on indexed fields are ever sent to the server; the rest are checked here."""
    for path, cond in conditions.items():
        values = _values(doc, path)
        if isinstance(cond, dict):
            if not all(_meets(values, op, arg) for op, arg in cond.items()):
                return False
        elif not _meets(values, "$eq", cond):
            return False
    return True


def newest_first(coll: Collection, drivers: list[dict[str, Any]], fields: set[str] | None,
                 wanted: Callable[[dict[str, Any]], bool], want: int, now: datetime,
                 when: str = "created", ids_descending: bool = False, shape: str | None = None,
                 upper: datetime | None = None) -> list[dict[str, Any]]:
    """At least `want` documents that match a driver and are `wanted`, newest `when` first (or all
    there are), read in slices of `when` from each driver's (field, when) index. Ties of `when` come
    in `_id` order, ascending unless `ids_descending`. `fields`: the projection (None: whole).
    `shape`: what `wanted` asks, to start from how far back the same listing reached just before.
    `upper`: none newer than this is read (a cursor's time: the slices start there, not at `now`)."""
    if upper is not None:
        now = upper
    memo = (coll.full_name, when, repr(drivers), shape) if shape is not None else None

    def span(covered: timedelta, width: timedelta) -> tuple[dict[str, Any], bool]:
        """now - covered: where this (older) slice ends. The first slice is open above (a clock ahead of
        ours still sorts first) unless a cursor bounds it; the last, 30 years back, is open below."""
        last = covered > OLDEST
        bounds: dict[str, Any] = {} if last else {"$gte": now - covered - width}
        if covered:
            bounds["$lt"] = now - covered
        elif upper is not None:
            bounds["$lte"] = upper
        return bounds, last
    out = _slices(coll, drivers, fields, wanted, want, when, span, _reached(memo, want) or FIRST_SLICE,
                  descending=True, ids_descending=ids_descending)
    if memo is not None and len(out) >= want:
        _remember(memo, want, now - _utc(out[want - 1][when]))
    return out


def oldest_first(coll: Collection, drivers: list[dict[str, Any]], fields: set[str] | None,
                 wanted: Callable[[dict[str, Any]], bool], want: int, now: datetime,
                 lower: datetime | None, when: str = "created") -> list[dict[str, Any]]:
    """newest_first the other way: at least `want` documents from `lower` on (or all there are), oldest
    first, ties of `when` in descending `_id` order (a newest-first listing read backwards from a cursor),
    in slices of `when` that grow as newest_first's do."""
    start = lower or now - OLDEST

    def span(covered: timedelta, width: timedelta) -> tuple[dict[str, Any], bool]:
        """start + covered: where this (newer) slice begins; the last, once past `now`, is open above."""
        last = start + covered + width > now
        bounds: dict[str, Any] = {"$gte": start + covered}
        if not last:
            bounds["$lt"] = start + covered + width
        return bounds, last
    return _slices(coll, drivers, fields, wanted, want, when, span, FIRST_SLICE, descending=False,
                   ids_descending=True)


def _slices(coll: Collection, drivers: list[dict[str, Any]], fields: set[str] | None,
            wanted: Callable[[dict[str, Any]], bool], want: int, when: str,
            span: Callable[[timedelta, timedelta], tuple[dict[str, Any], bool]], width: timedelta,
            descending: bool, ids_descending: bool) -> list[dict[str, Any]]:
    """What newest_first and oldest_first share: read slice after slice (`span` gives each one's range of
    `when` and whether it is the last) until `want` are found, each slice's matches sorted."""
    out: list[dict[str, Any]] = []
    covered = timedelta(0)
    while len(out) < want:
        bounds, last = span(covered, width)
        found = _union(coll, [{**d, when: bounds} for d in drivers], fields)
        out.extend(_sorted([d for d in found if wanted(d)], when, descending=descending,
                           ids_descending=ids_descending))
        if last:
            break
        covered += width
        width = _next_width(covered, want, len(out), bool(found))
    return out


def _next_width(covered: timedelta, want: int, have: int, found: bool) -> timedelta:
    """The next slice: as long as the density of matches so far needs for the rest of the page (a quarter
    more), at least as long as all read so far and at most GROWTH times that. A slice with no records at
    all grows GROWTH-fold: a quiet stretch, or the catalog's beginning, is crossed in a few steps (with
    only the density, a page that all matches had filled all but a few of grew a seventh each step: 70
    queries per branch on a 3,000-record catalog)."""
    density = (want - have) / have * 1.25 if have and found else GROWTH
    return covered * min(max(density, 1), GROWTH)


_REACH: dict[tuple[str, ...], tuple[float, int, timedelta]] = {}
REACH_FOR = 60.0
"""Seconds a listing's reach is remembered: how far back its page went, so the same listing (the
next call, the next page) reads it in one slice, not in three or four growing ones, each a query
per branch. A reach can only make the first slice too long or too short, never the answer wrong."""


def _reached(memo: tuple[str, ...] | None, want: int) -> timedelta | None:
    """The first slice for a listing of `want` records seen less than REACH_FOR seconds ago: as far
    back as it reached then, for that many records, and a quarter more."""
    seen = _REACH.get(memo) if memo is not None else None
    if seen is None or time.monotonic() - seen[0] > REACH_FOR:
        return None
    return max(FIRST_SLICE, seen[2] * (want / seen[1]) * 1.25)


def _remember(memo: tuple[str, ...], want: int, reach: timedelta) -> None:
    if len(_REACH) >= 4096:  # one per listing shape seen in the last minute: bounded all the same
        _REACH.clear()
    _REACH[memo] = (time.monotonic(), want, max(reach, timedelta(0)))


def _utc(stamp: datetime) -> datetime:
    return stamp if stamp.tzinfo is not None else stamp.replace(tzinfo=UTC)


def _union(coll: Collection, queries: Iterable[dict[str, Any]], fields: set[str] | None) -> list[dict[str, Any]]:
    """What each query finds (those fields of it, or all), once each."""
    seen: dict[Any, dict[str, Any]] = {}
    projection = dict.fromkeys(sorted(fields), 1) if fields is not None else None
    for q in queries:
        for doc in coll.find(q, projection, batch_size=BATCH):
            seen.setdefault(doc["_id"], doc)
    return list(seen.values())


def _sorted(docs: list[dict[str, Any]], key: str, descending: bool,
            ids_descending: bool = False) -> list[dict[str, Any]]:
    """In MongoDB's order for (key, _id): a missing or null key sorts lowest."""
    docs = sorted(docs, key=lambda d: d["_id"], reverse=ids_descending)
    return sorted(docs, key=lambda d: (d.get(key) is not None, d.get(key) if d.get(key) is not None else 0),
                  reverse=descending)
