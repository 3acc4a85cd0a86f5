// Ten AdamW steps (clipping, linear schedule with warmup) against the PyTorch reference.
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "golden_batch.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/transformer.h"
#include "test_util.h"
#include "train/optimizer.h"

namespace loratune {
namespace {

const float* f32(const SafetensorsFile& g, const std::string& name) {
  return reinterpret_cast<const float*>(g.find(name)->data);
}

void check_adamw(const std::string& adapter_name, const std::string& file) {
  SafetensorsFile g(test::golden(file));
  const auto& meta = g.metadata();
  Transformer m(test::golden("models/tiny"));
  LoraAdapter lora = LoraAdapter::load(test::golden("adapters/" + adapter_name), m.config());
  m.set_adapter(&lora);
  const test::GoldenBatch b = test::read_golden_batch(g);
  const std::vector<int>&tokens = b.tokens, &labels = b.labels;
  const std::vector<SequenceSpan>& seqs = b.seqs;
  const int steps = std::stoi(meta.at("steps"));
  const int total = std::stoi(meta.at("total_steps"));
  const int warmup = std::stoi(meta.at("warmup_steps"));
  const double lr0 = std::stod(meta.at("lr"));
  const double max_norm = std::stod(meta.at("max_grad_norm"));
  AdamWOptions opt;
  opt.weight_decay = std::stod(meta.at("weight_decay"));
  opt.eps = std::stod(meta.at("eps"));
  std::vector<LoraParam> params = lora.parameters();
  AdamW adamw(params, opt);
  for (int k = 0; k < steps; ++k) {
    lora.zero_grad();
    const int64_t count = count_loss_targets(labels, seqs);
    LossSum loss = m.forward_backward(tokens, seqs, labels, 1.0f / static_cast<float>(count));
    ASSERT_EQ(loss.count, count);
    const double norm = clip_grad_norm(params, max_norm);
    const double lr = scheduled_lr(LrSchedule::kLinear, lr0, k, total, warmup);
    EXPECT_NEAR(loss.sum / loss.count, f32(g, "losses")[k], 1e-4) << "step " << k;
    EXPECT_NEAR(norm, f32(g, "grad_norms")[k], 1e-4 * f32(g, "grad_norms")[k]) << "step " << k;
    EXPECT_NEAR(lr, f32(g, "lrs")[k], 1e-9 + 1e-6 * lr0) << "step " << k;
    adamw.step(lr);
  }
  for (const LoraParam& p : params) {
    const float* ref = f32(g, p.name);
    double diff = 0, scale = 0;
    for (size_t i = 0; i < p.size; ++i) {
      diff = std::max(diff, std::fabs(double(p.value[i]) - ref[i]));
      scale = std::max(scale, std::fabs(double(ref[i])));
    }
    EXPECT_LE(diff, 1e-4 * scale) << p.name;
  }
}

TEST(GoldenAdamW, QVTenSteps) {
  check_adamw("tiny_qv", "adamw_tiny_qv_10steps.safetensors");
}
TEST(GoldenAdamW, AllLinearWarmupAndClipping) {
  check_adamw("tiny_all", "adamw_tiny_all_warmup_clip_10steps.safetensors");
}
TEST(GoldenAdamW, ClippingPartlyActive) {
  check_adamw("tiny_qv", "adamw_tiny_qv_clip_partial_10steps.safetensors");
}

}  // namespace
}  // namespace loratune
