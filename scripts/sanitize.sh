#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer: builds
# build-asan/ (Debug-level checks at -O1, -DKVSCOPE_SANITIZE=ON) and runs ctest there.
# Usage: scripts/sanitize.sh [CTEST ARGS...]   e.g. scripts/sanitize.sh -R hardening
# Any sanitizer report fails its test (halt_on_error; UBSan does not recover). Leak
# checking is on; Open MPI's own allocations at exit are not kvscope's, so the MPI tests
# run with it off (tests/mpi/run.sh is a shell script around mpirun).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${SANITIZE_BUILD_DIR:-build-asan}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKVSCOPE_SANITIZE=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-halt_on_error=1:detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" "$@"
