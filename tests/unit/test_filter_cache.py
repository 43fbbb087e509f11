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
