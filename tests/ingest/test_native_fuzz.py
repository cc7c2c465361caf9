"""A short libFuzzer run of the native split's C core under AddressSanitizer and UBSan.

Compiles ``native/fuzz_otlp_scan.c`` with clang (``-fsanitize=fuzzer,address,undefined``) and the
real conventions' table into a temporary directory, seeds it with every captured request and runs
it for 15 seconds: it must exit 0 and leave no crash input. The harness also aborts on broken
invariants (candidates larger than the body, candidates that do not split again into themselves).
The long run is ``tests/benchmarks/fuzz_native.py --seconds N``.

Skipped when clang or libFuzzer's runtime is missing (Debian: clang, libclang-rt-14-dev), unless
USER_METRICS_REQUIRE_CLANG=1 (CI), where it fails.
"""

from __future__ import annotations

import os

import native_fuzz
import pytest

REQUIRE_CLANG = os.environ.get("USER_METRICS_REQUIRE_CLANG") == "1"


@pytest.mark.slow
def test_a_short_fuzz_run_finds_nothing(tmp_path):
    try:
        binary = native_fuzz.build(tmp_path)
    except native_fuzz.HarnessUnavailable as missing:
        if REQUIRE_CLANG:
            pytest.fail(f"{missing}, and USER_METRICS_REQUIRE_CLANG=1")
        pytest.skip(str(missing))
    corpus = tmp_path / "corpus"
    assert native_fuzz.seed_corpus(corpus) >= 60
    result = native_fuzz.run(binary, corpus, tmp_path / "artifacts", seconds=15, rss_limit_mb=1024)
    assert result.returncode == 0, result.output[-4000:]
    assert result.crashes == []
    assert result.executions > 0 and result.cov > 0  # it did run the core


def test_the_table_header_holds_the_conventions():
    header = native_fuzz.table_header()
    assert '"user.id"' in header and '"property."' in header and '"gen_ai."' in header
    assert native_fuzz.c_string('a"\\?\n\u00e9') == '"a\\042\\134\\077\\012\\303\\251"'
