#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 10) each and fails on the first crash.
#
#   fuzz/run.sh            # 10 s per target
#   fuzz/run.sh 600        # longer runs
#   FUZZ_TARGETS="info iova" fuzz/run.sh 60
#
# The seed is fixed (FUZZ_SEED, default 1) so that a short run in the test command explores
# the same inputs every time from a fresh checkout's empty corpus: it is a reproducible
# check, not a lottery. Exploratory runs: a different FUZZ_SEED and more seconds.
#
# Needs the nightly toolchain (skipped with a message when it is absent) and cargo-fuzz
# (installed with `cargo install cargo-fuzz --locked` when missing). Crash inputs are
# kept under fuzz/artifacts/<target>/; turn each into a regression test in
# vfio-core/tests/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-10}"
case "$seconds" in
    ''|*[!0-9]*) echo "usage: fuzz/run.sh [SECONDS]" >&2; exit 2 ;;
esac

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "fuzz: skipped: the nightly toolchain is not installed (rustup toolchain install nightly)"
    exit 0
fi
if ! cargo fuzz --help >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
# The code is safe Rust: panics and assertion failures are what a run looks for, so the
# sanitizer is left out and the targets built unoptimized (with debug assertions and
# overflow checks) to keep the build short. For long runs, FUZZ_PROFILE=release builds
# optimized code and FUZZ_SANITIZER=address adds AddressSanitizer.
case "${FUZZ_PROFILE:-dev}" in
    dev) profile=--dev ;;
    release) profile=--release ;;
    *) echo "FUZZ_PROFILE is dev or release" >&2; exit 2 ;;
esac
flags=("$profile" --debug-assertions --sanitizer "${FUZZ_SANITIZER:-none}")

echo "fuzz: building $(echo $targets | wc -w) targets (${flags[*]})"
build() {
    cargo +nightly fuzz build "${flags[@]}" "$@" >build.log 2>&1 || {
        cat build.log >&2
        exit 1
    }
}
if [ -z "${FUZZ_TARGETS:-}" ]; then
    build
else
    for t in $targets; do build "$t"; done
fi
rm -f build.log

failed=()
for t in $targets; do
    mkdir -p "corpus/$t"
    echo "fuzz: $t for ${seconds}s"
    if ! cargo +nightly fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -seed="${FUZZ_SEED:-1}" -print_final_stats=0 \
        >"run-$t.log" 2>&1; then
        echo "fuzz: $t CRASHED; the input is under fuzz/artifacts/$t/:" >&2
        tail -n 40 "run-$t.log" >&2
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashes in: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
