#!/usr/bin/env bash
# The main job on the built-in default, on a fresh machine: installs the dependencies, builds
# loratune, creates a tiny Qwen2-shaped model with the built-in byte-level tokenizer, and
# generates from it with the seed prompt template.
# Usage: scripts/demo.sh [work-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-out/demo}
scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)"
mkdir -p "$work"
build/loratune init-model --preset tiny --seed 0 --out "$work/model"
echo "== generate (base model, seed template)"
build/loratune generate --model "$work/model" --prompt "Say hello in French." --max-new-tokens 40
