#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in build-fuzz/ and runs each for
# SECONDS seconds (default 60) on one core at a 2 GB memory limit, from seed corpora made
# of the shipped files. Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   TARGET: safetensors llama2c gguf tokenizer_json tokenizer_bin sentencepiece config (default all)
# Findings (crash-*, leak-*, oom-*, timeout-*) land in build-fuzz/findings/TARGET/; the
# last lines of each run's log (executions, corpus size) are printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors llama2c gguf tokenizer_json tokenizer_bin sentencepiece config)
jobs=${FUZZ_JOBS:-1}  # targets run side by side (each on one core)

CC=clang CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DKVSCOPE_FUZZ=ON -DKVSCOPE_TESTS=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}")

# Seeds: the shipped models, tokenizers and configs (a corpus directory keeps growing
# across runs; delete build-fuzz/corpus to start over).
seed() {  # seed TARGET FILE...
  local dir="build-fuzz/corpus/$1"
  shift
  mkdir -p "$dir"
  for f in "$@"; do cp -f "$f" "$dir/seed_$(basename "$(dirname "$f")")_$(basename "$f")"; done
}
for t in "${targets[@]}"; do
  case $t in
    safetensors)
      mkdir -p build-fuzz/corpus/safetensors
      for m in data/models/tinystories656K data/models/austen_mha8; do
        { cat "$m/config.json"; printf '\n--8<--\n'; cat "$m/model.safetensors"; } \
          > "build-fuzz/corpus/safetensors/seed_$(basename "$m")"
      done ;;
    llama2c) seed llama2c data/models/stories260K/stories260K.bin ;;
    gguf) seed gguf fuzz/seeds/gguf/*.gguf ;;
    tokenizer_json) seed tokenizer_json data/models/tinystories656K/tokenizer.json tests/data/tokenizers/*/tokenizer.json ;;
    tokenizer_bin) seed tokenizer_bin data/models/stories260K/tok512.bin ;;
    sentencepiece) seed sentencepiece data/models/babyllama105/tok105.model ;;
    config) seed config configs/*.yaml tests/data/smoke/*.yaml tests/data/infra/*.yaml ;;
    *) echo "unknown target $t" >&2; exit 2 ;;
  esac
done

run_one() {
  local t=$1
  mkdir -p "build-fuzz/findings/$t"
  # -rss_limit_mb: an input that makes a loader allocate over 2 GB is a finding (oom-*);
  # -timeout: one input running over 10 s is a finding (timeout-*). One worker, one core.
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
    "build-fuzz/fuzz/fuzz_$t" "build-fuzz/corpus/$t" -max_total_time="$seconds" \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 -timeout=10 -max_len=4194304 \
      -artifact_prefix="build-fuzz/findings/$t/" -print_final_stats=1 \
      > "build-fuzz/fuzz_$t.log" 2>&1 || echo "fuzz_$t: stopped with a finding (build-fuzz/fuzz_$t.log)"
}
export -f run_one
export seconds
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one {}'

for t in "${targets[@]}"; do
  echo "== $t: $(grep -E '^stat::number_of_executed_units' "build-fuzz/fuzz_$t.log" | awk '{print $2}') executions," \
       "corpus $(ls "build-fuzz/corpus/$t" | wc -l) inputs," \
       "findings $(ls "build-fuzz/findings/$t" | wc -l)"
  grep -E '^#[0-9]+.*(DONE|pulse)' "build-fuzz/fuzz_$t.log" | tail -1 || true
done
