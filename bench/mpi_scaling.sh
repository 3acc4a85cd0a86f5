#!/usr/bin/env bash
# Data-parallel scaling on this machine: the same LoRA job (same global batch, same data) as
# 1 rank x all cores and as one rank per core under mpirun, tokens/s of each, their ratio,
# and the gradient bytes each rank exchanges per step.
# Usage: bench/mpi_scaling.sh [MODEL_DIR] [DATA] [STEPS]
#   MODEL_DIR  default: a random Qwen2-0.5B-shaped bf16 folder made in a temp folder
#   DATA       default: ../shared/data/alpaca_zh_demo.json, else the shipped sample
#   STEPS      optimizer steps per run (default 6; the first is included in tokens/s)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=build/loratune
[ -x "$bin" ] || { echo "build loratune first (scripts/test.sh)" >&2; exit 2; }
command -v mpirun >/dev/null || { echo "mpirun not found (openmpi-bin)" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
model=${1:-}
if [ -z "$model" ]; then
  model=$tmp/model
  "$bin" init-model --preset qwen2-0.5b --dtype bf16 --out "$model" >/dev/null
fi
data=${2:-../shared/data/alpaca_zh_demo.json}
[ -f "$data" ] || data=examples/data/sample_seed.json
steps=${3:-6}
cores=$(nproc)
global_batch=$((4 * cores))
as_root=()
[ "$(id -u)" -ne 0 ] || as_root=(--allow-run-as-root)

# One job: RANKS ranks of THREADS threads, each rank with its share of the global batch.
run() {
  local ranks=$1 threads=$2 out=$tmp/out_$1x$2
  local args=(train --model "$model" --data "$data" --output-dir "$out" --max-steps "$steps"
    --per-device-train-batch-size $((global_batch / ranks)) --max-length 256
    --eval-strategy no --save-strategy no --logging-steps "$steps" --threads "$threads")
  if [ "$ranks" -eq 1 ]; then
    "$bin" "${args[@]}" 2>"$out.log"
  else
    mpirun "${as_root[@]}" --bind-to core -np "$ranks" "$bin" "${args[@]}" 2>"$out.log"
  fi
  tail -n 1 "$out/trainer_log.jsonl" | sed 's/.*"tokens_per_second":\([0-9.e+-]*\).*/\1/'
}

one=$(run 1 "$cores")
many=$(run "$cores" 1)
exchange=$(grep -o 'sends [0-9]* gradient values ([0-9.]* MB) and receives [0-9.]* MB' \
  "$tmp/out_${cores}x1.log" || true)
cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
printf '{"figure":"mpi_scaling","cpu":"%s","global_batch":%d,"steps":%d,' "$cpu" "$global_batch" "$steps"
printf '"one_rank_threads":%d,"one_rank_tokens_per_second":%s,' "$cores" "$one"
printf '"ranks":%d,"ranks_tokens_per_second":%s,"ratio":%s,"exchange":"%s"}\n' \
  "$cores" "$many" "$(awk -v a="$many" -v b="$one" 'BEGIN { printf "%.3f", a / b }')" "$exchange"
