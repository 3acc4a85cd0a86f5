#!/usr/bin/env bash
# The main job on the built-in default, on a fresh machine: installs the dependencies, builds
# loratune, creates a tiny Qwen2-shaped model with the built-in byte-level tokenizer, asks it a
# question, fine-tunes a LoRA adapter on the shipped sample dataset, and asks again.
# Usage: scripts/demo.sh [work-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-out/demo}
scripts/install-deps.sh
cmake -S . -B build >/dev/null
cmake --build build -j "$(nproc)"
rm -rf "$work"
mkdir -p "$work"
lt=build/loratune
question="What is the capital of France?"

$lt init-model --preset tiny --seed 0 --out "$work/model"
echo "== before training: $question"
$lt generate --model "$work/model" --prompt "$question" --max-new-tokens 40

# A tiny random model learns the sample answers by heart with a larger rank and learning rate
# than the Qwen2-0.5B recipe (examples/seed.yaml) uses.
$lt train --model "$work/model" --data examples/data/sample_seed.json \
  --output-dir "$work/run" --num-train-epochs 40 --per-device-train-batch-size 4 \
  --learning-rate 5e-3 --target-modules all-linear --lora-r 16 --lora-alpha 32 \
  --lora-dropout 0 --eval-strategy epoch --save-strategy epoch --save-total-limit 2 \
  --logging-steps 20

echo "== after training: $question"
$lt generate --model "$work/model" --adapter "$work/run/final_model" --prompt "$question" \
  --max-new-tokens 40
echo "== outputs: $work/run (trainer_log.jsonl, loss.svg, checkpoints, final_model/)"
