#!/usr/bin/env bash
# kvscope's decode against llama2.c's run.c on the same model and tokens (issue: faster than
# the C reference). Builds run.c from a llama2.c checkout the user passes (nothing of it is
# copied into this repository), then runs both greedily from BOS, in pairs whose order
# alternates, RUNS times with one thread and RUNS times with all threads (run.c built with
# -fopenmp), and prints each program's own decode tokens/s (run.c: "achieved tok/s",
# timed from its second token; kvscope generate: new tokens over decode time, text
# detokenization included) and the whole process's CPU seconds, as median (min-max), with
# the ratio of medians. Both must print the same text, or the script stops.
#
#   bench/peer_llama2c.sh /path/to/llama2.c [RUNS=10] [MODEL.bin] [TOKENIZER.bin|.model]
#   (git clone https://github.com/karpathy/llama2.c; defaults: the shipped stories260K;
#   babyllama105: data/models/babyllama105/model5000.bin data/models/babyllama105/tok105.model,
#   whose SentencePiece model is written as run.c's tokenizer.bin by sp_to_llama2c_tok.py)
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:?usage: $0 LLAMA2C_DIR [RUNS] [MODEL.bin] [TOKENIZER.bin|.model]}
runs=${2:-10}
model=${3:-data/models/stories260K/stories260K.bin}
tok=${4:-data/models/stories260K/tok512.bin}
kv=build/kvscope
[ -f "$src/run.c" ] || { echo "no run.c in $src" >&2; exit 1; }
[ -x "$kv" ] || { echo "build kvscope first ($kv)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/kvscope-peer.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
if [[ "$tok" == *.model ]]; then
  /usr/bin/python3 bench/sp_to_llama2c_tok.py "$tok" "$tmp/tokenizer.bin"
  tok="$tmp/tokenizer.bin"
fi
gcc -Ofast -march=native -o "$tmp/run" "$src/run.c" -lm
gcc -Ofast -march=native -fopenmp -o "$tmp/runomp" "$src/run.c" -lm
steps=$(( $(/usr/bin/python3 -c "import struct,sys; print(struct.unpack('7i', open(sys.argv[1],'rb').read(28))[6])" "$model") ))
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); model $model, up to $steps positions"

# cpu_time FILE CMD...: runs CMD and writes its user + system CPU seconds to FILE, from
# getrusage of the child (microseconds; /usr/bin/time prints hundredths, too coarse for a
# 20 ms run). Python's own start-up is not counted.
cpu_time() {
  local f=$1
  shift
  /usr/bin/python3 -c 'import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(f"{r.ru_utime + r.ru_stime:.5f}\n")
sys.exit(rc)' "$f" "$@"
}

# one PROGRAM THREADS OUT: runs it once, leaving text in OUT.txt, tok/s and CPU s in OUT.num
one() {
  local prog=$1 threads=$2 out=$3
  if [ "$prog" = llama2c ]; then
    local exe="$tmp/run"
    [ "$threads" = 1 ] || exe="$tmp/runomp"
    OMP_NUM_THREADS=$threads cpu_time "$out.time" \
      "$exe" "$model" -z "$tok" -t 0 -n "$steps" > "$out.txt" 2> "$out.err"
    tps=$(grep -o 'achieved tok/s: [0-9.]*' "$out.err" | awk '{print $3}')
  else
    local t=$threads
    [ "$threads" = 1 ] || t=0
    cpu_time "$out.time" \
      "$kv" generate -m "$model" -n "$steps" --threads "$t" > "$out.txt" 2> "$out.err"
    tps=$(grep -o 'new tokens at [0-9.]*' "$out.err" | awk '{print $4}')
  fi
  echo "$tps $(cat "$out.time")" > "$out.num"
}

for threads in 1 "$(nproc)"; do
  for i in $(seq 1 "$runs"); do
    if [ $((i % 2)) = 1 ]; then order="llama2c kvscope"; else order="kvscope llama2c"; fi
    for p in $order; do one "$p" "$threads" "$tmp/$p.$threads.$i"; done
    # run.c prints the text with a trailing newline and its stats on stderr.
    if ! cmp -s <(tr -d '\n' < "$tmp/llama2c.$threads.$i.txt") <(tr -d '\n' < "$tmp/kvscope.$threads.$i.txt"); then
      echo "FAIL: run.c and kvscope printed different text (run $i, $threads threads)" >&2
      diff <(fold -w 80 "$tmp/llama2c.$threads.$i.txt") <(fold -w 80 "$tmp/kvscope.$threads.$i.txt") | head >&2
      exit 1
    fi
  done
done
/usr/bin/python3 - "$tmp" "$runs" "$(nproc)" <<'PY'
import statistics, sys
tmp, runs, cores = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def col(p, t, k):
    return [float(open(f"{tmp}/{p}.{t}.{i}.num").read().split()[k]) for i in range(1, runs + 1)]
def mm(v, f):
    return f"{statistics.median(v):{f}} ({min(v):{f}}-{max(v):{f}})"
print("| threads | run.c tok/s | kvscope tok/s | kvscope / run.c | run.c CPU s | kvscope CPU s |")
print("|---|---|---|---|---|---|")
for t in ["1", cores]:
    a, b = col("llama2c", t, 0), col("kvscope", t, 0)
    ca, cb = col("llama2c", t, 1), col("kvscope", t, 1)
    ratio = statistics.median(b) / statistics.median(a)
    print(f"| {t} | {mm(a, '.0f')} | {mm(b, '.0f')} | **{ratio:.2f}x** | {mm(ca, '.4f')} | {mm(cb, '.4f')} |")
print(f"median (min-max) of {runs} paired runs; same text from both")
PY
