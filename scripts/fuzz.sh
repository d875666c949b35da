#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and runs each for
# SECONDS seconds (default 60) on one core at a 2 GB memory limit, from seed corpora made
# of the shipped files and of valid checkpoints of every family (fuzz/make_seeds.cpp).
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#        scripts/fuzz.sh --build-only        (what CI runs: the targets must compile)
#   TARGET: safetensors llama2c gguf tokenizer_json tokenizer_bin sentencepiece config (default all)
# Environment: FUZZ_JOBS (targets side by side, default 1), FUZZ_BUILD_DIR (default
# build-fuzz), FUZZ_NO_BUILD=1 (use the built targets as they are; the smoke tests do).
# Findings (crash-*, leak-*, oom-*, timeout-*) land in BUILD/findings/TARGET/; the last
# lines of each run's log (executions, corpus size) are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
all=(safetensors llama2c gguf tokenizer_json tokenizer_bin sentencepiece config)
build=${FUZZ_BUILD_DIR:-build-fuzz}

configure_and_build() {  # TARGETS...  (extra cmake arguments in $extra)
  # Clang is the compiler libFuzzer needs: clang 14 on Debian 12 (packages clang and
  # libclang-rt-14-dev, in scripts/install-deps.sh).
  CC=${CC_FUZZ:-clang} CXX=${CXX_FUZZ:-clang++} cmake -S . -B "$build" \
    -DCMAKE_BUILD_TYPE=${FUZZ_BUILD_TYPE:-RelWithDebInfo} \
    -DKVSCOPE_FUZZ=ON -DKVSCOPE_TESTS=OFF -DKVSCOPE_MPI=OFF ${extra:-} >/dev/null
  cmake --build "$build" -j"$(nproc)" --target make_seeds $(printf 'fuzz_%s ' "$@")
}

if [ "${1:-}" = "--build-only" ]; then
  # A compile-and-link check (CI): unoptimised and without debug information, about half
  # the time of the fuzzing build, in a directory of its own.
  build=${FUZZ_BUILD_DIR:-build-fuzz-check}
  FUZZ_BUILD_TYPE=Debug extra="-DCMAKE_CXX_FLAGS_DEBUG=-O0 -DCMAKE_C_FLAGS_DEBUG=-O0" \
    configure_and_build "${all[@]}"
  echo "fuzz targets built in $build/fuzz/"
  exit 0
fi

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
jobs=${FUZZ_JOBS:-1}  # targets run side by side (each on one core)

[ "${FUZZ_NO_BUILD:-0}" = 1 ] || configure_and_build "${targets[@]}"

# Seeds: the shipped models, tokenizers and configs, and one valid checkpoint of every
# family in safetensors and GGUF form (a corpus directory keeps growing across runs;
# delete BUILD/corpus to start over).
seed() {  # seed TARGET FILE...
  local dir="$build/corpus/$1"
  shift
  mkdir -p "$dir"
  for f in "$@"; do cp -f "$f" "$dir/seed_$(basename "$(dirname "$f")")_$(basename "$f")"; done
}
seeds="$build/seeds.$$"  # this run's own: smoke tests run side by side
case " ${targets[*]} " in
  *" gguf "*|*" safetensors "*) "$build/fuzz/make_seeds" "$seeds" >/dev/null ;;
esac
for t in "${targets[@]}"; do
  case $t in
    safetensors)
      mkdir -p "$build/corpus/safetensors"
      for m in data/models/tinystories656K data/models/austen_mha8; do
        { cat "$m/config.json"; printf '\n--8<--\n'; cat "$m/model.safetensors"; } \
          > "$build/corpus/safetensors/seed_$(basename "$m")"
      done
      seed safetensors "$seeds"/safetensors/* ;;
    llama2c) seed llama2c data/models/stories260K/stories260K.bin ;;
    gguf) seed gguf fuzz/seeds/gguf/*.gguf "$seeds"/gguf/*.gguf ;;
    tokenizer_json) seed tokenizer_json data/models/tinystories656K/tokenizer.json tests/data/tokenizers/*/tokenizer.json ;;
    tokenizer_bin) seed tokenizer_bin data/models/stories260K/tok512.bin ;;
    sentencepiece) seed sentencepiece data/models/babyllama105/tok105.model ;;
    config) seed config configs/*.yaml tests/data/smoke/*.yaml tests/data/infra/*.yaml ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done

rm -rf "$seeds"

run_one() {
  local t=$1
  mkdir -p "$build/findings/$t"
  # -rss_limit_mb: an input that makes a loader allocate over 2 GB is a finding (oom-*);
  # -timeout: one input running over 10 s is a finding (timeout-*). One worker, one core.
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    "$build/fuzz/fuzz_$t" "$build/corpus/$t" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -max_len=4194304 \
      -artifact_prefix="$build/findings/$t/" -print_final_stats=1 \
      > "$build/fuzz_$t.log" 2>&1 || echo "fuzz_$t: stopped with a finding ($build/fuzz_$t.log)"
}
export -f run_one
export seconds build
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'

for t in "${targets[@]}"; do
  echo "== $t: $(grep -E '^stat::number_of_executed_units' "$build/fuzz_$t.log" | awk '{print $2}') executions," \
       "corpus $(ls "$build/corpus/$t" | wc -l) inputs," \
       "findings $(ls "$build/findings/$t" | wc -l)"
  grep -E '^#[0-9]+.*(DONE|pulse)' "$build/fuzz_$t.log" | tail -1 || true
done
