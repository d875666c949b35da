#!/usr/bin/env bash
# Strong scaling of `kvscope run` over MPI ranks on this machine, one thread per rank
# (docs/distributed.md): the spectrum and perplexity kinds on bench/mpi/*.yaml with 1 and 2
# ranks, each repeated REPEATS times (median and min-max of the run's own wall time from
# its manifest, and of the whole job including mpirun's start-up). Checks that the CSVs of
# 1 and 2 ranks are identical, and prints the bytes each rank handed to reductions and the
# time it spent in collectives.
#
#   bench/mpi_scaling.sh [build/kvscope] [REPEATS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-build/kvscope}
repeats=${2:-3}
tmp=$(mktemp -d /tmp/kvscope-scaling.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
flags=(--oversubscribe)
if [ "$(id -u)" -eq 0 ]; then flags+=(--allow-run-as-root); fi
export OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_btl=self,vader
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
for cfg in bench/mpi/spectrum.yaml bench/mpi/perplexity.yaml; do
  name=$(grep '^name:' "$cfg" | awk '{print $2}')
  for n in 1 2; do
    for r in $(seq 1 "$repeats"); do
      s=$(date +%s.%N)
      mpirun -n "$n" "${flags[@]}" "$bin" run "$cfg" --results "$tmp/n$n.$r" --quiet
      e=$(date +%s.%N)
      echo "$e - $s" | bc > "$tmp/n$n.$r/job_seconds"
    done
  done
  /usr/bin/python3 tests/mpi/compare.py "$tmp/n1.1/$name" "$tmp/n2.1/$name" 2 > /dev/null ||
    { echo "FAIL: $name differs between 1 and 2 ranks"; exit 1; }
  /usr/bin/python3 - "$tmp" "$name" "$repeats" <<'PY'
import json, statistics, sys
tmp, name, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
def runs(n):
    out = []
    for r in range(1, repeats + 1):
        m = json.load(open(f"{tmp}/n{n}.{r}/{name}/manifest.json"))
        job = float(open(f"{tmp}/n{n}.{r}/job_seconds").read())
        out.append((m["wall_seconds"], job, m["extra"]["mpi"]))
    return out
def fmt(v):
    return f"{statistics.median(v):.2f} ({min(v):.2f}-{max(v):.2f})"
one, two = runs(1), runs(2)
t1 = statistics.median(w for w, _, _ in one)
t2 = statistics.median(w for w, _, _ in two)
j1 = statistics.median(j for _, j, _ in one)
j2 = statistics.median(j for _, j, _ in two)
mpi2 = two[0][2]
print(f"{name}: run wall s, median (min-max) of {repeats}: 1 rank {fmt([w for w,_,_ in one])}, "
      f"2 ranks {fmt([w for w,_,_ in two])}; speed-up {t1 / t2:.2f}, efficiency {t1 / (2 * t2):.0%}")
print(f"  whole job incl. mpirun start-up: 1 rank {fmt([j for _,j,_ in one])}, "
      f"2 ranks {fmt([j for _,j,_ in two])}; efficiency {j1 / (2 * j2):.0%}")
print(f"  2 ranks: {mpi2['bytes_reduced']} bytes reduced per rank, "
      f"{statistics.median(m['seconds_in_collectives'] for _,_,m in two):.3f} s in collectives "
      f"(waiting for the slower rank included); CSVs identical to 1 rank")
PY
done
