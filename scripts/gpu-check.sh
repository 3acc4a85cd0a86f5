#!/usr/bin/env bash
# The checks that need an NVIDIA GPU, as one run: the GPU and driver, a CUDA build, the tests
# that run on the GPU (the others skip there or pass as on any machine), and the bench's device
# line. Everything goes to OUT_DIR (default: gpu-check-out), the summary also to stdout.
# Usage: scripts/gpu-check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check-out}}
mkdir -p "$out"
build=build-gpu
status=0
step() {  # step NAME COMMAND...: runs it, logs to OUT_DIR/NAME.log, notes a failure
  local name=$1
  shift
  echo "== $name: $*"
  if "$@" >"$out/$name.log" 2>&1; then echo "   ok"; else
    echo "   FAILED (exit $?), last lines:"
    tail -n 20 "$out/$name.log"
    status=1
  fi
}
step gpu nvidia-smi
step configure cmake -S . -B "$build" -DLORATUNE_CUDA=ON
step build cmake --build "$build" -j "$(nproc)"
step gpu-tests ctest --test-dir "$build" --output-on-failure -R '^(Device|Cuda)\.'
if grep -q 'Skipped' "$out/gpu-tests.log"; then
  echo "   a GPU test skipped:"
  grep -A1 'Skipped' "$out/gpu-tests.log" | head -n 6
  status=1
fi
step cli "$build/loratune" bench --only bandwidth --threads "$(nproc)"
grep -h '"figure":"cpu"' "$out/cli.log" || true
exit $status
