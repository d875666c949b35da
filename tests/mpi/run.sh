#!/usr/bin/env bash
# MPI tests (registered in tests/CMakeLists.txt when MPI is found; docs/distributed.md).
#
#   run.sh KVSCOPE MPIEXEC agree   every config in tests/mpi/ run alone and with 1, 2 and 3
#                                  ranks gives the same CSVs and dumps (compare.py); a
#                                  2-rank dump reads back through kvscope's own reader too
#   run.sh KVSCOPE MPIEXEC kill    rank 1 killed mid-run: the job fails and nothing under
#                                  results looks finished
set -euo pipefail
bin=$1 mpiexec=$2 mode=$3
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d /tmp/kvscope-mpi.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
flags=(--oversubscribe)
if [ "$(id -u)" -eq 0 ]; then flags+=(--allow-run-as-root); fi
# Containers: no cross-memory attach between ranks, no network needed.
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader
python=/usr/bin/python3

mpi() {  # mpi N ARGS...: kvscope ARGS on N ranks
  local n=$1
  shift
  "$mpiexec" -n "$n" "${flags[@]}" "$bin" "$@"
}

if [ "$mode" = agree ]; then
  for cfg in tests/mpi/*.yaml; do
    name=$(basename "$cfg" .yaml)
    echo "== $name"
    # --digits 17: every float as the exact double, so equal CSVs mean equal bits.
    "$bin" run "$cfg" --results "$tmp/alone" --quiet --digits 17
    for n in 1 2 3; do
      mpi "$n" run "$cfg" --results "$tmp/n$n" --quiet --digits 17
      $python tests/mpi/compare.py "$tmp/alone/$name" "$tmp/n$n/$name" "$n"
    done
  done
  # `kvscope dump` itself, and kvscope's own reader on the stitched file: the spectrum of a
  # 2-rank dump (computed on 2 ranks again) equals that of the 1-process dump.
  echo "== kvscope dump + kv_spectrum over dumps"
  args=(--model data/models/stories260K/stories260K.bin
        --text data/text/tinystories/tinystories_valid_head.txt --doc-separator "<|endoftext|>"
        --seq-len 512 --n-seq 20 --threads 1)  # the same threads per rank as alone
  mkdir -p "$tmp/d1" "$tmp/d2"
  "$bin" dump "${args[@]}" --out "$tmp/d1/x.h5" > /dev/null
  mpi 2 dump "${args[@]}" --out "$tmp/d2/x.h5" > /dev/null
  for d in d1 d2; do
    printf 'kind: kv_spectrum\nname: from_dump\nthreads: 1\nkv_spectrum:\n  dumps: [%s]\n' \
      "$tmp/$d/x.h5" > "$tmp/$d.yaml"
  done
  "$bin" run "$tmp/d1.yaml" --results "$tmp/s1" --quiet --digits 17
  mpi 2 run "$tmp/d2.yaml" --results "$tmp/s2" --quiet --digits 17
  cmp "$tmp/s1/from_dump/spectrum.csv" "$tmp/s2/from_dump/spectrum.csv"
  $python - "$tmp/d1/x.h5" "$tmp/d2/x.h5" <<'PY'
import sys, h5py
a, b = (h5py.File(p, "r") for p in sys.argv[1:])
for n in ["tokens", "layer_00/k", "layer_04/v", "layer_02/k_pre_rope"]:
    assert a[n][()].tobytes() == b[n][()].tobytes(), n
print("  kvscope dump: 2-rank file equals the 1-process file through h5py")
PY
  # A lost shard is an error naming it, never NaN or zeros passed off as activations.
  rm "$tmp/d2/x.rank1of2.h5"
  if "$bin" run "$tmp/d2.yaml" --results "$tmp/s3" --quiet 2> "$tmp/err.txt"; then
    echo "FAIL: a dump with a missing shard was read"; exit 1
  fi
  grep -q "x.rank1of2.h5, which is missing" "$tmp/err.txt" || { cat "$tmp/err.txt"; exit 1; }
  echo "  missing shard: $(head -c 160 "$tmp/err.txt")"
  # What does not split is refused on more than one rank, leaving no result behind.
  echo "== refusals"
  if mpi 2 run tests/data/smoke/train.yaml --results "$tmp/t" --quiet 2> "$tmp/err.txt"; then
    echo "FAIL: kind train ran on 2 ranks"; exit 1
  fi
  grep -q "kind 'train' runs in one process" "$tmp/err.txt" || { cat "$tmp/err.txt"; exit 1; }
  [ ! -e "$tmp/t/train" ] || { echo "FAIL: a refused run left results"; exit 1; }
  if mpi 2 tables --dry-run 2> "$tmp/err.txt" > /dev/null; then
    echo "FAIL: kvscope tables ran on 2 ranks"; exit 1
  fi
  grep -q "only 'run' and 'dump' split" "$tmp/err.txt" || { cat "$tmp/err.txt"; exit 1; }
  echo "  train kind and 'kvscope tables' refused on 2 ranks"
  echo "PASS"
elif [ "$mode" = kill ]; then
  # A dump long enough (about 20 s on 2 ranks) to be killed in the middle.
  cat > "$tmp/long.yaml" <<YAML
kind: dump_kv
name: killed
threads: 1
models:
  - name: babyllama105
    path: data/models/babyllama105/model5000.bin
texts:
  - name: emma
    path: data/text/janeausten/emma.txt
dump_kv: {seq_len: 256, n_seq: 600, tensors: [k, v]}
YAML
  mpi 2 run "$tmp/long.yaml" --results "$tmp/res" > "$tmp/log.txt" 2>&1 &
  job=$!
  # Rank 1: the kvscope process whose environment says so and whose command line names
  # this test's directory.
  victim=""
  for _ in $(seq 1 600); do
    if [ -e "$tmp/res/killed.partial/babyllama105__emma.rank1of2.h5.partial" ]; then
      for p in /proc/[0-9]*; do
        { tr '\0' '\n' < "$p/environ" | grep -qx OMPI_COMM_WORLD_RANK=1 &&
          tr '\0' ' ' < "$p/cmdline" | grep -q "$tmp/long.yaml" && victim=${p#/proc/}; } \
          2> /dev/null || true
      done
      [ -n "$victim" ] && break
    fi
    sleep 0.1
  done
  [ -n "$victim" ] || { echo "FAIL: rank 1 never started writing"; cat "$tmp/log.txt"; exit 1; }
  sleep 1
  kill -9 "$victim"
  echo "killed rank 1 (pid $victim)"
  rc=0
  wait "$job" || rc=$?
  [ "$rc" -ne 0 ] || { echo "FAIL: the job exited 0 after a rank was killed"; exit 1; }
  [ ! -e "$tmp/res/killed" ] || { echo "FAIL: results/killed exists"; ls -R "$tmp/res"; exit 1; }
  finished=$(find "$tmp/res" -type f ! -name '*.partial' ! -path '*.partial/*.partial' | grep -v '\.partial/' || true)
  [ -z "$finished" ] || { echo "FAIL: finished-looking files: $finished"; exit 1; }
  echo "job exit $rc; left: $(find "$tmp/res" | tr '\n' ' ')"
  echo "PASS"
else
  echo "usage: $0 KVSCOPE MPIEXEC agree|kill" >&2
  exit 2
fi
