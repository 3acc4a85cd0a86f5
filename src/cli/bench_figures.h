// The measurements of `loratune bench`, one function per figure. Each runs in its own child
// process (bench.cpp) so that peak RSS is per figure; each returns the figure's JSON lines.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/config.h"

namespace loratune::cli::bench {

// JSON that keeps keys in insertion order, so "figure" comes first.
using OJson = nlohmann::ordered_json;

// A scratch folder under $TMPDIR (or /tmp), removed with the object (also on errors).
class TempFolder {
 public:
  explicit TempFolder(const std::string& prefix);
  ~TempFolder();
  TempFolder(const TempFolder&) = delete;
  TempFolder& operator=(const TempFolder&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// One distinct shape of the model's frozen linear layers, y[M, out] = x[M, in] · W[out, in]ᵀ;
// `modules` names the layers that have it ("q_proj,o_proj").
struct LinearShape {
  std::string modules;
  int in;
  int out;
};
std::vector<LinearShape> linear_shapes(const ModelConfig& c);

// P: parameters of every frozen linear layer of all blocks plus lm_head (biases left out;
// a tied lm_head counted once).
int64_t linear_parameter_count(const ModelConfig& c);

// Model FLOPs per trained token at sequence length T: 4·P + 6·L·(H·D)·T (see kFlopCount).
double train_flops_per_token(const ModelConfig& c, int T);
extern const char* const kFlopCount;

// sgemm: per-shape GFLOP/s of cblas_sgemm (X·Wᵀ, dY·W) and of ops::linear_forward /
// linear_backward with M rows on every weight format (own AVX2, oneDNN fp32, oneDNN bf16),
// then the "sgemm_peak" line (the max over the fp32 ones) and "bf16_peak" (over the bf16 ones).
std::vector<OJson> sgemm_figure(const ModelConfig& c, int M);

// cpu: the CPU's brand and features, oneDNN's ISA, and the matrix kernel each mode chooses.
OJson cpu_figure();

// bandwidth: multithreaded streaming read of max(1 GiB, 4 × L3) bytes, best of 5 passes.
OJson bandwidth_figure();

// train: `steps` LoRA training steps of batch × seq random tokens (r 8 on q_proj, v_proj);
// the first step is a warm-up when steps > 1; the median of the others.
OJson train_figure(const std::string& model_dir, int batch, int seq, int steps);

// seed: the seed recipe through run_training on the first `records` records of `data`.
struct SeedJob {
  std::string model, data, tokenizer;  // tokenizer empty: the model folder's
  int64_t records = 1000;
  int threads = 0;
};
OJson seed_figure(const SeedJob& job);

// train, seed and generate run in the precision of the run's backend (ops/backend.h).
// generate: greedy, batch 1: prefill of a random prompt, then `new_tokens` decode steps, in
// chunks of 16 with a plain read of the weight matrices before each chunk and after the last
// (the bandwidth decode had in the same minute).
OJson generate_figure(const std::string& model_dir, int prompt_tokens, int new_tokens);

// serve: `loratune serve` (engine and HTTP on a loopback port, 16 slots) answering greedy
// completions of a random `prompt_tokens` prompt and `new_tokens` tokens for 1, 4 and 16
// concurrent clients (a fixed request count each: 2 per client, at least 4): generated
// tokens/s, its ratio to 1 client, p50/p99 latency per request, failed (or lost) requests.
std::vector<OJson> serve_figure(const std::string& model_dir, const std::string& tokenizer_dir,
                                int prompt_tokens, int new_tokens);

}  // namespace loratune::cli::bench
