#include "generate/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace loratune {

Sampler::Sampler(const SamplingOptions& options) : opt_(options), rng_(options.seed) {
  if (opt_.do_sample && !(opt_.temperature > 0))
    throw UsageError("--temperature must be positive when sampling");
  if (!(opt_.top_p > 0 && opt_.top_p <= 1)) throw UsageError("--top-p must be in (0, 1]");
  if (opt_.top_k < 0) throw UsageError("--top-k must be >= 0");
  if (!(opt_.repetition_penalty > 0)) throw UsageError("--repetition-penalty must be positive");
}

int Sampler::next(float* logits, int V, const std::vector<int>& history) {
  if (opt_.repetition_penalty != 1.0f) {
    // Each distinct earlier token is penalised once, as HF's processor gathers/scatters.
    std::vector<int> seen(history);
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    for (int t : seen) {
      if (t < 0 || t >= V) continue;
      float& s = logits[t];
      s = s < 0 ? s * opt_.repetition_penalty : s / opt_.repetition_penalty;
    }
  }
  if (!opt_.do_sample) return static_cast<int>(std::max_element(logits, logits + V) - logits);

  for (int i = 0; i < V; ++i) logits[i] /= opt_.temperature;
  order_.resize(V);
  std::iota(order_.begin(), order_.end(), 0);
  // Candidates sorted by logit, highest first (stable: ties keep the lower id first).
  int keep = opt_.top_k > 0 ? std::min(opt_.top_k, V) : V;
  std::partial_sort(order_.begin(), order_.begin() + keep, order_.end(), [&](int a, int b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  order_.resize(keep);
  probs_.resize(keep);
  const float max_logit = logits[order_[0]];
  double sum = 0;
  for (int i = 0; i < keep; ++i) sum += (probs_[i] = std::exp(logits[order_[i]] - max_logit));
  if (opt_.top_p < 1.0f) {
    // Smallest prefix whose probability reaches top_p (always at least one token).
    double cumulative = 0;
    int cut = keep;
    for (int i = 0; i < keep; ++i) {
      cumulative += probs_[i] / sum;
      if (cumulative >= opt_.top_p) {
        cut = i + 1;
        break;
      }
    }
    keep = cut;
    sum = 0;
    for (int i = 0; i < keep; ++i) sum += probs_[i];
  }
  double r = rng_.uniform() * sum;
  for (int i = 0; i < keep; ++i) {
    r -= probs_[i];
    if (r < 0) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace loratune
