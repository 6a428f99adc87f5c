"""Listings answered from memory for a moment (netwarden.api.listing_cache): what the pipeline
records shows within the time to live, what is done through the API at once."""

from __future__ import annotations

import threading

import pytest

from netwarden.api.auth import Role
from netwarden.api.listing_cache import ListingCache
from tests.test_api import make_api, record, window


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_page_is_kept_for_its_time_to_live_only() -> None:
    clock = _Clock()
    cache = ListingCache(1.0, clock=clock)
    reads: list[int] = []

    def build() -> bytes:
        reads.append(1)
        return b"page %d" % len(reads)

    assert cache.answer("/a?limit=50", build) == b"page 1"
    clock.now += 0.9
    assert cache.answer("/a?limit=50", build) == b"page 1"  # kept
    assert cache.answer("/a?limit=10", build) == b"page 2"  # another query: read
    clock.now += 0.2
    assert cache.answer("/a?limit=50", build) == b"page 3"  # expired: read again
    assert len(reads) == 3


def test_requests_missing_the_same_page_together_build_it_once() -> None:
    cache = ListingCache(60.0)
    started, release = threading.Event(), threading.Event()
    builds: list[int] = []

    def build() -> bytes:
        builds.append(1)
        started.set()
        release.wait(5)
        return b"page"

    answers: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: answers.append(cache.answer("/a", build))) for _ in range(8)
    ]
    threads[0].start()
    assert started.wait(5)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(5)
    assert answers == [b"page"] * 8 and len(builds) == 1


def test_a_page_read_before_a_write_is_never_kept_after_it() -> None:
    """A write starts a new generation: what was kept is dropped, and a page whose read began
    before the write (it may hold the old state) is not kept when it ends after it."""
    cache = ListingCache(60.0)
    cache.put("/a", b"old", generation=cache.generation)
    before = cache.generation
    cache.invalidate()
    assert cache.get("/a") is None
    cache.put("/a", b"read before the write", generation=before)
    assert cache.get("/a") is None
    cache.put("/a", b"new", generation=cache.generation)
    assert cache.get("/a") == b"new"


def test_off_keeps_nothing_and_memory_is_bounded_oldest_first() -> None:
    off = ListingCache(0)
    off.put("/a", b"x", generation=off.generation)
    assert off.get("/a") is None
    clock = _Clock()
    small = ListingCache(60.0, max_bytes=20, clock=clock)
    for key in ("/a", "/b", "/c"):
        small.put(key, key.encode() * 3, generation=small.generation)  # 6 bytes each
        clock.now += 1
    small.put("/d", b"/d" * 3, generation=small.generation)  # 24 bytes: /a goes
    assert small.get("/a") is None and small.get("/b") == b"/b" * 3 and small.get("/d")
    small.put("/big", b"x" * 21, generation=small.generation)  # larger than all: not kept
    assert small.get("/big") is None and small.get("/c")
    clock.now += 60  # all expired: they go when the next page is kept
    small.put("/e", b"e", generation=small.generation)
    assert list(small._entries) == ["/e"] and small._bytes == 1
    with pytest.raises(ValueError):
        ListingCache(-1)


def test_the_api_answers_a_repeated_listing_from_memory_and_its_own_writes_at_once(
    tmp_path,
) -> None:
    api = make_api(tmp_path, listing_cache_seconds=60.0)
    try:
        record(api, window(0, "shop/cart", 2.0))
        first = api.get("/api/v1/anomalies?limit=50")
        assert first.status_code == 200 and first.json()["total"] == 1
        # the pipeline (here: the store directly) records another anomaly: the same listing
        # is answered from memory for the time to live; another page is read
        record(api, window(5, "shop/pay", 2.0))
        assert api.get("/api/v1/anomalies?limit=50").content == first.content
        assert api.get("/api/v1/anomalies?limit=49").json()["total"] == 2
        # a write through the API shows at once, in every listing
        (cart,) = [a for a in first.json()["items"] if a["identity"] == "shop/cart"]
        done = api.post(f"/api/v1/anomalies/{cart['id']}/acknowledge", json={"note": "mine"})
        assert done.status_code == 200, done.text
        after = api.get("/api/v1/anomalies?limit=50").json()
        assert after["total"] == 2
        assert {a["identity"]: a["state"] for a in after["items"]}["shop/cart"] == "acknowledged"
        # a refused caller cannot empty the cache (nor read it)
        record(api, window(9, "db/pg", 2.0))
        assert api.client.post("/api/v1/anomalies/1/acknowledge").status_code == 401
        assert api.get("/api/v1/anomalies?limit=50").json()["total"] == 2
        assert api.client.get("/api/v1/anomalies?limit=50").status_code == 401
        assert api.get("/api/v1/anomalies?limit=50", role=Role.admin).json()["total"] == 2
    finally:
        api.service.store.close()
