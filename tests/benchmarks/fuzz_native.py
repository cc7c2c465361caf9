"""The long libFuzzer run of the native split's C core under AddressSanitizer (issue 17).

Compiles ``src/user_metrics/ingest/native/fuzz_otlp_scan.c`` with clang
(``-fsanitize=fuzzer,address,undefined``) and the real conventions' table, seeds it with every
captured request, runs it for ``--seconds`` and prints executions, exec/s, coverage (cov = edges,
ft = features) and crashes. The corpus grows in ``--corpus`` (kept between runs when given).

    .venv/bin/python tests/benchmarks/fuzz_native.py --seconds 600
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
import native_fuzz  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument(
        "--corpus", type=Path, default=None, help="corpus directory (default: a temporary one)"
    )
    parser.add_argument("--rss-limit-mb", type=int, default=2048)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-native-") as tmp:
        work = Path(tmp)
        binary = native_fuzz.build(work)
        corpus = args.corpus or work / "corpus"
        seeds = native_fuzz.seed_corpus(corpus)
        artifacts = Path.cwd() / "fuzz-artifacts"  # crash inputs, kept; removed when empty
        load = os.getloadavg()[0]
        result = native_fuzz.run(binary, corpus, artifacts, args.seconds, args.rss_limit_mb)
        if not any(artifacts.iterdir()):
            artifacts.rmdir()
        print(f"load (1-minute): {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
        print(f"seeds: {seeds} captured requests; corpus now {len(list(corpus.iterdir()))} inputs")
        print(f"executions: {result.executions:,} in {result.seconds} s ({result.exec_per_s:,} exec/s)")
        print(f"peak RSS: {result.peak_rss_mb} MB")
        print(f"coverage: cov {result.cov} edges, ft {result.ft} features")
        print(f"crashes: {len(result.crashes)} (exit code {result.returncode})")
        for path in result.crashes:
            print(f"  {path}")
        if result.returncode != 0 or result.crashes:
            print(result.output[-4000:])
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
