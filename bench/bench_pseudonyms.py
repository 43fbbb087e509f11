"""Benchmark of the pseudonym maths: transformations per second per core, and enrolment of many records.

Run on demand::

    python bench/bench_pseudonyms.py                 # micro-benchmarks + enrolment of 100,000 records
    python bench/bench_pseudonyms.py --enrol 10000   # smaller enrolment

Prints each figure and its ratio to the target (issue 4: >= 5,000 pseudonym transformations/s per core).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime

from gateway.client.pseudonyms import PseudonymClient
from gateway.pseudonyms.identifiers import bsn
from gateway.pseudonyms.keys import KeyRing, KeyVersion
from gateway.pseudonyms.pep import PolymorphicPseudonym
from gateway.pseudonyms.transcryptor import Transcryptor

TARGET_PER_CORE = 5_000
_WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2)


def _bsn_for(n: int) -> str:
    """A deterministic valid BSN for each n (8 digits, then the check digit; skips the 1-in-11 misses)."""
    while True:
        digits = f"{n % 100_000_000:08d}"
        check = sum(w * int(d) for w, d in zip(_WEIGHTS, digits, strict=True)) % 11
        if check != 10 and digits != "00000000":
            return digits + str(check)
        n += 100_000_000


def _rate(label: str, func: Callable[[], object], *, seconds: float = 1.5, target: float | None = None) -> float:
    func()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            func()
        count += 50
    rate = count / elapsed
    ratio = f"  ({rate / target:.2f}x target {target:,.0f}/s)" if target else ""
    print(f"  {label:<58} {rate:>10,.0f} /s  {1e6 / rate:8.1f} µs{ratio}")
    return rate


def _ring() -> KeyRing:
    return KeyRing({1: KeyVersion.generate(1, datetime.now(UTC))}, 1)


def micro() -> None:
    ring = _ring()
    transcryptor = Transcryptor(ring)
    client = PseudonymClient(transcryptor.public_key(), recipient_key=transcryptor.recipient_key("riec", "politie"))
    identifier = bsn("123456782")
    pp = client.polymorphic_pseudonym(identifier)
    wire = pp.encode()
    own = transcryptor.participant_pseudonym(pp, "bsn", "riec", "belastingdienst")
    encrypted = transcryptor.encrypted_pseudonym(pp, "bsn", "riec", "politie").encode()
    print("Per core (single thread):")
    _rate("partner: polymorphic encryption (normalise+hash+ElGamal)", lambda: client.polymorphic("bsn", "123456782"))
    _rate("gateway: decode + validate polymorphic pseudonym (96 B)", lambda: PolymorphicPseudonym.decode(wire))
    _rate("gateway: rerandomise", lambda: transcryptor.rerandomize(pp), target=TARGET_PER_CORE)
    _rate("gateway: (a) partnership-domain pseudonym", lambda: transcryptor.partnership_pseudonym(pp, "bsn", "riec"),
          target=TARGET_PER_CORE)
    _rate("gateway: (b) participant pseudonym", lambda: transcryptor.participant_pseudonym(
        pp, "bsn", "riec", "politie"), target=TARGET_PER_CORE)
    _rate("gateway: (b) encrypted pseudonym (RSK + rerandomise)", lambda: transcryptor.encrypted_pseudonym(
        pp, "bsn", "riec", "politie"), target=TARGET_PER_CORE)
    _rate("gateway: (c) translate holder -> requester", lambda: transcryptor.translate(
        own, "riec", "belastingdienst", "politie"), target=TARGET_PER_CORE)
    _rate("partner: open encrypted pseudonym", lambda: client.open(encrypted))


def _enrol_chunk(args: tuple[int, int]) -> int:
    """Partner makes polymorphic pseudonyms; gateway derives partnership pseudonym + encrypted own pseudonym."""
    start, stop = args
    transcryptor = Transcryptor(_ring())
    client = PseudonymClient(transcryptor.public_key())
    for n in range(start, stop):
        pp = client.polymorphic_pseudonym(bsn(_bsn_for(n)))
        transcryptor.partnership_pseudonym(pp, "bsn", "riec")
        transcryptor.encrypted_pseudonym(pp, "bsn", "riec", "politie")
    return stop - start


def enrol(records: int) -> None:
    workers = os.cpu_count() or 1
    step = max(1, records // (workers * 8))
    chunks = [(i, min(i + step, records)) for i in range(0, records, step)]
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        done = sum(pool.map(_enrol_chunk, chunks))
    elapsed = time.perf_counter() - start
    per_record = 3  # transformations per record: polymorphic encryption, (a), (b) encrypted
    print(f"Enrolment of {done:,} records on {workers} cores (partner encryption + (a) + (b) encrypted):")
    print(f"  {elapsed:.1f} s total, {done / elapsed:,.0f} records/s, "
          f"{done * per_record / elapsed / workers:,.0f} transformations/s per core "
          f"({done * per_record / elapsed / workers / TARGET_PER_CORE:.2f}x target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--enrol", type=int, default=100_000, help="records to enrol (0 to skip)")
    args = parser.parse_args()
    micro()
    if args.enrol:
        enrol(args.enrol)


if __name__ == "__main__":
    main()
