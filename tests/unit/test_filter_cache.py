"""The byte-bounded, generation-checked cache of decoded filter sets (``gateway.enrolment.filter_cache``): a value
is returned only for the generation it was kept under, the least recently used goes first when the sizes exceed
the bound, and a value larger than the bound is not kept at all."""

from __future__ import annotations

from gateway.enrolment.filter_cache import GenerationCache


def test_a_value_is_returned_only_for_its_generation() -> None:
    cache: GenerationCache[str] = GenerationCache(1000)
    cache.put("police", 3, "records", 100)
    assert cache.get("police", 3) == (True, "records")
    assert cache.get("police", 4) == (False, None)  # changed since: not used as it is
    assert cache.kept("police") == (3, "records")  # but kept, as the base to bring up to date
    cache.put("police", 4, "updated", 100)
    assert cache.get("police", 4) == (True, "updated")
    assert (len(cache), cache.bytes) == (1, 100)  # the update replaced it
    cache.discard("police")  # one that could not be brought up to date
    assert cache.kept("police") is None
    assert (len(cache), cache.bytes) == (0, 0)


def test_an_older_generation_does_not_replace_a_newer_one() -> None:
    """Two threads read around a change: the one that read the old counter stores last, and must not win."""
    cache: GenerationCache[str] = GenerationCache(1000)
    cache.put("police", 5, "new", 100)
    cache.put("police", 4, "old", 100)
    assert cache.get("police", 5) == (True, "new")


def test_the_least_recently_used_go_first_when_over_the_bound() -> None:
    cache: GenerationCache[str] = GenerationCache(250)
    cache.put("police", 1, "a", 100)
    cache.put("tax", 1, "b", 100)
    assert cache.get("police", 1)[0]  # the police's now used more recently than the tax office's
    cache.put("kvk", 1, "c", 100)
    assert cache.get("tax", 1) == (False, None)
    assert cache.get("police", 1) == (True, "a")
    assert cache.get("kvk", 1) == (True, "c")
    assert cache.bytes <= 250


def test_a_value_larger_than_the_bound_is_not_kept_and_zero_keeps_nothing() -> None:
    cache: GenerationCache[str] = GenerationCache(250)
    cache.put("police", 1, "a", 100)
    cache.put("tax", 1, "huge", 300)
    assert cache.get("tax", 1) == (False, None)
    assert cache.get("police", 1) == (True, "a")  # and it did not push the others out
    off: GenerationCache[str] = GenerationCache(0)
    off.put("police", 1, "a", 100)
    assert len(off) == 0


def test_a_kept_value_that_grows_is_counted_and_the_bound_holds() -> None:
    """A kept set keeps subsets it derived (``HeldRecords.watch``): counted as they come, only for the value
    still kept under the key, and the least recently used go while over the bound."""
    cache: GenerationCache[list[str]] = GenerationCache(250)
    police, tax = ["police"], ["tax"]
    cache.put("police", 1, police, 100)
    cache.put("tax", 1, tax, 100)
    cache.grow("police", id(tax), 40)  # not the value kept under that key
    assert cache.bytes == 200
    cache.grow("tax", id(tax), 40)
    assert cache.bytes == 240
    cache.grow("tax", id(tax), 40)  # over the bound: the police's (least recently used) go
    assert cache.get("police", 1) == (False, None)
    assert cache.get("tax", 1) == (True, tax)
    assert cache.bytes == 180 <= cache.max_bytes
    cache.put("tax", 2, ["tax, updated"], 100)  # what the replaced value grows by no longer counts
    cache.grow("tax", id(tax), 40)
    assert cache.bytes == 100
