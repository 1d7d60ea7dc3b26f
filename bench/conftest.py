"""Benchmark sizes: small by default (every benchmark is also a smoke test
in the normal test run, with pytest-benchmark disabled), the real sizes with
FASTLOGITS_BENCH_FULL=1."""

import os

FULL = os.environ.get("FASTLOGITS_BENCH_FULL") == "1"
