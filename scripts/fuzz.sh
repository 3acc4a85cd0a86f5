#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/*.cpp) with clang and runs each for a bounded time.
# Usage: scripts/fuzz.sh [seconds-per-target] [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
build_dir=${2:-build-fuzz}
CC=clang-14 CXX=clang++-14 cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLORATUNE_FUZZ=ON >/dev/null
cmake --build "$build_dir" -j "$(nproc)"
for src in fuzz/*.cpp; do
  name=$(basename "$src" .cpp)
  corpus="$build_dir/corpus/$name"
  mkdir -p "$corpus"
  seeds=()
  [ -d "fuzz/seeds/$name" ] && seeds=("fuzz/seeds/$name")
  echo "== $name: ${seconds}s"
  "$build_dir/$name" -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=4096 \
    -print_final_stats=1 "$corpus" "${seeds[@]}"
done
