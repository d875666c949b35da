#!/usr/bin/env bash
# Installs kvscope's build and run dependencies from Debian packages (the one list of
# them; .ci/run and scripts/bootstrap.sh both call this).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(
  build-essential cmake pkg-config git
  libeigen3-dev
  libopenblas-openmp-dev liblapacke-dev   # OpenMP build of OpenBLAS: shares kvscope's thread pool
  libhdf5-dev hdf5-tools
  libyaml-cpp-dev libfmt-dev nlohmann-json3-dev libcli11-dev
  catch2
  libsentencepiece-dev libpcre2-dev libutf8proc-dev libssl-dev
  gnuplot-nox
  libopenmpi-dev openmpi-bin              # optional at build time; mpirun splits runs (docs/distributed.md)
  python3 python3-numpy python3-h5py
  pybind11-dev python3-dev python3-pytest python3-matplotlib   # the Python module (docs/python.md)
  clang libclang-rt-14-dev                # the libFuzzer targets (scripts/fuzz.sh; CI builds them)
  clang-format                            # CI checks the sources against .clang-format
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
