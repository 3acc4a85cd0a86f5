#include "train/optimizer.h"

#include <cmath>

#include "core/error.h"

namespace loratune {

AdamW::AdamW(const std::vector<LoraParam>& params, const AdamWOptions& options)
    : params_(params), opt_(options) {
  for (const LoraParam& p : params_) {
    m_.emplace_back(p.size, 0.0f);
    v_.emplace_back(p.size, 0.0f);
  }
}

void AdamW::step(double lr) {
  ++t_;
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(t_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(t_));
  // torch's single-tensor AdamW: p ← p·(1 − lr·wd); m, v updated in fp32;
  // p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps).
  const float decay = static_cast<float>(1.0 - lr * opt_.weight_decay);
  const float b1 = static_cast<float>(opt_.beta1), b2 = static_cast<float>(opt_.beta2);
  const float step_size = static_cast<float>(lr / bc1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const float eps = static_cast<float>(opt_.eps);
  for (size_t k = 0; k < params_.size(); ++k) {
    float* p = params_[k].value;
    const float* g = params_[k].grad;
    float* m = m_[k].data();
    float* v = v_[k].data();
#pragma omp parallel for simd schedule(static) if (params_[k].size > 65536)
    for (size_t i = 0; i < params_[k].size; ++i) {
      p[i] *= decay;
      m[i] = b1 * m[i] + (1.0f - b1) * g[i];
      v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bc2_sqrt + eps);
    }
  }
}

double clip_grad_norm(const std::vector<LoraParam>& params, double max_norm) {
  double sum = 0.0;
  for (const LoraParam& p : params)
    for (size_t i = 0; i < p.size; ++i) sum += static_cast<double>(p.grad[i]) * p.grad[i];
  const double norm = std::sqrt(sum);
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0)
      for (const LoraParam& p : params)
        for (size_t i = 0; i < p.size; ++i) p.grad[i] *= static_cast<float>(coef);
  }
  return norm;
}

LrSchedule parse_lr_schedule(const std::string& name) {
  if (name == "linear") return LrSchedule::kLinear;
  if (name == "cosine") return LrSchedule::kCosine;
  if (name == "constant") return LrSchedule::kConstant;
  throw UsageError("unknown lr scheduler '" + name + "'", "", "use linear, cosine or constant");
}

double scheduled_lr(LrSchedule schedule, double base_lr, int64_t step, int64_t total,
                    int64_t warmup) {
  if (step < warmup)
    return base_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  const double progress = static_cast<double>(step - warmup) /
                          static_cast<double>(std::max<int64_t>(1, total - warmup));
  switch (schedule) {
    case LrSchedule::kLinear:
      return base_lr * std::max(0.0, static_cast<double>(total - step) /
                                         static_cast<double>(std::max<int64_t>(1, total - warmup)));
    case LrSchedule::kCosine:
      return base_lr * std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * progress)));
    case LrSchedule::kConstant:
      return base_lr;
  }
  return base_lr;
}

}  // namespace loratune
