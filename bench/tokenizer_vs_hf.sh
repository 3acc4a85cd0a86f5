#!/usr/bin/env bash
# Side-by-side encode throughput: loratune's tokenizer against Hugging Face tokenizers, one
# thread each, on the same texts (alpaca records in the seed template), in the same run.
#
# Usage: bench/tokenizer_vs_hf.sh [BUILD_DIR] [ALPACA_JSON] [ITERATIONS]
#   BUILD_DIR    holds bench_tokenizer (default: build)
#   ALPACA_JSON  default: ../shared/data/alpaca_zh_demo.json
# The tokenizer is ../shared/tokenizer/qwen2; the reference library is the one in
# ../shared/reference/tokenizer (its node_modules, after `npm ci`; the folder may be copied
# elsewhere and named with REFERENCE_DIR=...).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${1:-build}
data=${2:-../shared/data/alpaca_zh_demo.json}
iterations=${3:-20}
model=../shared/tokenizer/qwen2
ref=${REFERENCE_DIR:-../shared/reference/tokenizer}

if [ ! -d "$ref/node_modules/tokenizers" ]; then
  echo "no $ref/node_modules/tokenizers: run 'npm ci' there (or set REFERENCE_DIR)" >&2
  exit 2
fi

ours=$(taskset -c 0 "$build_dir/bench_tokenizer" "$model" "$data" "$iterations")
echo "$ours" | grep -v '^RESULT'
theirs=$(taskset -c 0 node bench/bench_tokenizer_hf.js "$ref" "$model/tokenizer.json" "$data" "$iterations")
echo "$theirs" | grep -v '^RESULT'

read -r _ _ our_warm our_first our_sum <<<"$(echo "$ours" | grep '^RESULT')"
read -r _ _ hf_warm hf_first hf_sum <<<"$(echo "$theirs" | grep '^RESULT')"
if [ "$our_sum" != "$hf_sum" ]; then
  echo "id checksums differ ($our_sum vs $hf_sum): the two do not produce the same ids" >&2
  exit 1
fi
awk -v a="$our_first" -v b="$hf_first" -v c="$our_warm" -v d="$hf_warm" 'BEGIN {
  printf "ratio loratune / HF tokenizers, same ids, 1 thread each:\n"
  printf "  first pass (cold caches): %.2fx (%.2f vs %.2f MB/s)\n", a / b, a, b
  printf "  warm passes:              %.2fx (%.2f vs %.2f MB/s)\n", c / d, c, d
}'
