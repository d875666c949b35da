#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer: builds
# build-asan/ (Debug-level checks at -O1, -DKVSCOPE_SANITIZE=ON) and runs ctest there.
# Usage: scripts/sanitize.sh [CTEST ARGS...]   e.g. scripts/sanitize.sh -R hardening
# Any sanitizer report fails its test (halt_on_error; UBSan does not recover). Leak
# checking is on, except for the MPI tests (below).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SANITIZE_BUILD_DIR:-build-asan}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSCOPE_SANITIZE=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
asan=halt_on_error=1:abort_on_error=0
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# Everything but the MPI tests with leak checking; those without it (Open MPI's components
# leave their allocations to the process's end, from libraries dlopen()ed and gone).
ASAN_OPTIONS=${ASAN_OPTIONS:-$asan:detect_leaks=1} \
  ctest --test-dir "$build" --output-on-failure -j"$(nproc)" -E '^mpi:' "$@"
ASAN_OPTIONS=${ASAN_OPTIONS:-$asan:detect_leaks=0} \
  ctest --test-dir "$build" --output-on-failure -j"$(nproc)" -R '^mpi:' "$@"
