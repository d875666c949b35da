#!/usr/bin/env bash
# kvscope's decode and prefill against ggml's own products on the same GGUF file: builds
# ggml's CPU backend from a checkout you pass (into a temporary directory; nothing of ggml
# is committed), times its mat-vecs and mat-muls over the file's matrices (peer_ggml.cpp),
# then runs kvscope's bench_big_prefill --decode on the same file, threads and tokens.
# The ratio of kvscope's decode tok/s to ggml's matrix-only tok/s is a lower bound on how
# kvscope's products compare (ggml's figure leaves out attention, norms and the rest).
#   bench/peer_ggml.sh GGML_CHECKOUT MODEL.gguf [THREADS] [TOKENS]
# Needs a build with -DKVSCOPE_BENCH=ON (build/bench/bench_big_prefill).
set -euo pipefail
ggml=${1:?usage: bench/peer_ggml.sh GGML_CHECKOUT MODEL.gguf [THREADS] [TOKENS]}
model=${2:?usage: bench/peer_ggml.sh GGML_CHECKOUT MODEL.gguf [THREADS] [TOKENS]}
threads=${3:-$(nproc)}
tokens=${4:-128}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/kvscope_peer_ggml.XXXXXX")
trap 'rm -rf "$work"' EXIT
cmake -S "$ggml" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
  -DGGML_BUILD_TESTS=OFF -DGGML_BUILD_EXAMPLES=OFF > "$work/cmake.log"
cmake --build "$work/build" -j"$(nproc)" --target ggml ggml-base ggml-cpu > "$work/build.log"
libs=$(find "$work/build" -name 'libggml*.a' | sort -r | tr '\n' ' ')
g++ -O2 -std=c++17 "$here/peer_ggml.cpp" -I"$ggml/include" -o "$work/peer_ggml" \
  -Wl,--start-group $libs -Wl,--end-group -fopenmp -lpthread -lm
"$work/peer_ggml" "$model" "$threads" "$tokens"
"$here/../build/bench/bench_big_prefill" "$model" --tokens "$tokens" --decode 8 \
  --threads "$threads"
