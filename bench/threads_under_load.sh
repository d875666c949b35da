#!/usr/bin/env bash
# Threads under load: one config's wall time with 1 thread and with all cores, on an idle
# machine and with BUSY other processes spinning (default: cores - 1, i.e. a load of about
# cores + the run), for OpenMP's spinning waits (OMP_WAIT_POLICY=active, libgomp's
# default) and for passive waits (what kvscope sets unless OMP_WAIT_POLICY is set).
# The ceiling is the run's own 1-thread time in the same condition: with another busy
# process, all threads should never be much slower than one.
# Usage: bench/threads_under_load.sh [CONFIG] [BUSY]   (from the repository root, after a build)
set -euo pipefail
cfg=${1:-configs/paper_a_energy.yaml}
cores=$(nproc)
busy=${2:-$((cores > 1 ? cores - 1 : 1))}
out=$(mktemp -d)
trap 'rm -rf "$out"; kill ${pids:-} 2>/dev/null || true' EXIT
time_run() {  # policy threads -> seconds
  local s e
  s=$(date +%s.%N)
  OMP_WAIT_POLICY=$1 build/kvscope run -q "$cfg" --results "$out" --force --threads "$2" >/dev/null
  e=$(date +%s.%N)
  echo "$e - $s" | bc
}
echo "config $cfg, $cores cores; busy processes: 0 and $busy"
printf '%-6s %-8s %10s %10s %8s\n' load policy "1 thread" "$cores thr" ratio
for load in idle busy; do
  pids=""
  if [ "$load" = busy ]; then
    for _ in $(seq "$busy"); do (while :; do :; done) & pids="$pids $!"; done
    sleep 1
  fi
  for policy in active passive; do
    one=$(time_run "$policy" 1)
    all=$(time_run "$policy" "$cores")
    printf '%-6s %-8s %9.2fs %9.2fs %8.2f\n' "$load" "$policy" "$one" "$all" "$(echo "$all / $one" | bc -l)"
  done
  [ -n "$pids" ] && kill $pids 2>/dev/null || true
  pids=""
done
