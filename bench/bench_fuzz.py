"""A larger schemathesis run against the live gateway (on demand; CI runs a bounded one in tests/security).

    python bench/bench_fuzz.py [--examples 60] [--negative 30] [--seed N]

Without --seed a random seed is drawn and printed, so that a failing run can be replayed.

Prints the number of cases per operation and mode, the status codes seen, the time, the known issues met and
any other failure. Exit 1 on a 5xx or an unknown failure.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.security.fuzzing import fuzz, live_gateway


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=60, help="positive examples per operation")
    parser.add_argument("--negative", type=int, default=30, help="negative examples per operation")
    parser.add_argument("--seed", type=int, default=None, help="derandomise (CI's run uses 2026)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    with tempfile.TemporaryDirectory() as tmp, live_gateway(Path(tmp)) as live:
        report = fuzz(live, max_examples=args.examples, negative_examples=args.negative, seed=seed)
    print(f"seed {seed} (replay with --seed {seed})")
    print(f"{'operation [mode]':<72} cases")
    for key, count in sorted(report.cases.items()):
        print(f"{key:<72} {count:>5}")
    print(f"\ncases: {report.total} over {len(report.cases)} operationxmode pairs in {report.seconds:.1f} s "
          f"({report.total / max(report.seconds, 1e-9):.0f} cases/s)")
    print("status codes:", dict(sorted(report.statuses.items())))
    print("negative mode not applicable:", sorted(report.unsatisfiable) or "-")
    for issue, where in sorted(report.known.items()):
        print(f"known issue {issue}: {len(where)} operationxmode pairs")
    print(f"error answers not documented as problem+json: {len(report.error_shape)} operationxmode pairs")
    for key, failure in sorted(report.failures.items()):
        print(f"\nFAILURE {key}\n{failure}")
    server_errors = sum(n for status, n in report.statuses.items() if status >= 500)
    print(f"\n5xx: {server_errors}; unknown failures: {len(report.failures)}")
    return 1 if server_errors or report.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
