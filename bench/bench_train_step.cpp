// One LoRA training step (forward, backward, clipping, AdamW) on a model folder: seconds per
// step, tokens/s and peak RSS, as one JSON line.
//   bench_train_step --model DIR [--batch 4] [--seq 512] [--steps 2] [--lora-r 8]
//                    [--target-modules q_proj,v_proj] [--threads N] [--group-tokens 512]
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/rng.h"
#include "core/threads.h"
#include "lora/adapter.h"
#include "model/transformer.h"
#include "train/optimizer.h"

namespace {

const char* arg(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return fallback;
}

double peak_rss_gb() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / (1024.0 * 1024.0);  // ru_maxrss is in KiB
}

}  // namespace

int main(int argc, char** argv) {
  using namespace loratune;
  const char* model_dir = arg(argc, argv, "--model", nullptr);
  if (!model_dir) {
    std::fprintf(stderr, "usage: bench_train_step --model DIR [--batch B] [--seq T] [--steps S]\n");
    return 2;
  }
  const int B = std::atoi(arg(argc, argv, "--batch", "4"));
  const int T = std::atoi(arg(argc, argv, "--seq", "512"));
  const int steps = std::atoi(arg(argc, argv, "--steps", "2"));
  const int group = std::atoi(arg(argc, argv, "--group-tokens", "512"));
  set_num_threads(std::atoi(arg(argc, argv, "--threads", "0")));
  try {
    Transformer model(model_dir);
    LoraConfig lc;
    lc.r = std::atoi(arg(argc, argv, "--lora-r", "8"));
    lc.target_modules = parse_target_modules(arg(argc, argv, "--target-modules", "q_proj,v_proj"));
    LoraAdapter adapter(model.config(), lc, 0);
    model.set_adapter(&adapter);
    std::vector<LoraParam> params = adapter.parameters();
    AdamWOptions opt;
    opt.lr = 1e-4;
    AdamW adamw(params, opt);

    // Random tokens, every position labelled.
    Rng rng(1);
    std::vector<int> tokens(static_cast<size_t>(B) * T);
    for (int& t : tokens) t = static_cast<int>(rng.next_u64() % model.config().vocab_size);
    std::vector<SequenceSpan> seqs;
    for (int b = 0; b < B; ++b) seqs.push_back({b * T, T, 0});
    const int64_t count = count_loss_targets(tokens, seqs);

    double best = 1e30, loss = 0;
    for (int s = 0; s < steps; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      adapter.zero_grad();
      LossSum l =
          model.forward_backward(tokens, seqs, tokens, 1.0f / count, Dropout{0.05f, 7}, group);
      clip_grad_norm(params, 1.0);
      adamw.step(opt.lr);
      const double sec =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::min(best, sec);
      loss = l.sum / l.count;
    }
    std::printf(
        "{\"bench\": \"train_step\", \"batch\": %d, \"seq\": %d, \"lora_r\": %d, \"threads\": %d, "
        "\"seconds_per_step\": %.3f, \"tokens_per_second\": %.1f, \"loss\": %.4f, "
        "\"peak_rss_gb\": %.3f}\n",
        B, T, lc.r, num_threads(), best, B * T / best, loss, peak_rss_gb());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_train_step: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
