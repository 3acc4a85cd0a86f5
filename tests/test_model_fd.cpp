// The whole training pass against finite differences: Transformer::forward_backward's LoRA
// gradients must match central differences of the loss it returns, with and without LoRA
// dropout, and with dropout the gradients must not depend on how sequences are grouped.
#include <cmath>
#include <string>
#include <vector>

#include "core/rng.h"
#include "lora/adapter.h"
#include "model/transformer.h"
#include "test_util.h"

namespace loratune {
namespace {

struct Batch {
  std::vector<int> tokens, labels;
  std::vector<SequenceSpan> seqs;
};

// Sequences of the given lengths with random tokens; labels are the tokens, with a few
// positions ignored (−100).
Batch make_batch(const std::vector<int>& lengths, int vocab, uint64_t seed) {
  Rng rng(seed);
  Batch b;
  for (int len : lengths) {
    b.seqs.push_back({static_cast<int>(b.tokens.size()), len, 0});
    for (int t = 0; t < len; ++t) {
      const int id = static_cast<int>(rng.next_u64() % vocab);
      b.tokens.push_back(id);
      b.labels.push_back(t == 2 ? -100 : id);
    }
  }
  return b;
}

LoraConfig all_linear(double dropout) {
  LoraConfig c;
  c.r = 4;
  c.lora_alpha = 8;
  c.lora_dropout = dropout;
  c.target_modules = {"all-linear"};
  return c;
}

// Σ −log p over the batch, as forward_backward returns it (its gradients are not read).
double loss_sum(Transformer& m, LoraAdapter& lora, const Batch& b, const Dropout& dropout) {
  LossSum l = m.forward_backward(b.tokens, b.seqs, b.labels, 1.0f, dropout);
  lora.zero_grad();
  return l.sum;
}

// Gradients of the mean loss: forward_backward with grad_scale = 1/count on zeroed buffers.
LossSum mean_grads(Transformer& m, LoraAdapter& lora, const Batch& b, const Dropout& dropout,
                   int max_group_tokens = 512) {
  lora.zero_grad();
  const int64_t count = count_loss_targets(b.labels, b.seqs);
  LossSum l = m.forward_backward(b.tokens, b.seqs, b.labels, 1.0f / static_cast<float>(count),
                                 dropout, max_group_tokens);
  EXPECT_EQ(l.count, count);
  return l;
}

// Checks entries of dA and dB of every module in the first and the last layer against central
// differences of the mean loss: the entry with the largest gradient and two fixed others.
//
// Sizes and tolerance: the tiny model (C 64, F 128, 2 layers, H 4 / Hkv 2, V 512) on two
// sequences with 8 labelled positions. B ~ N(0, 0.1²) makes every LoRA branch move the loss,
// so the largest gradients of the mean loss are ~0.1–0.2. The model computes in fp32: with the
// step h = 1e-2·max(1, |w|) its rounding noise moves a difference quotient by ~1e-6, and the
// truncation error (h²·f‴/6) stays below 0.3% on the largest entries. So
// |fd − g| ≤ 1e-2·|g| + 5e-5·max|g| checks every entry above ~5e-3·max|g| to 1% and the rest
// to ~1e-5 absolute; a missing, doubled or unmasked term fails by far.
void check_against_fd(Transformer& m, LoraAdapter& lora, const Batch& b, const Dropout& dropout) {
  const int L = m.config().num_hidden_layers;
  const LossSum base = mean_grads(m, lora, b, dropout);
  ASSERT_GT(base.count, 0);
  const double count = static_cast<double>(base.count);
  // Copy the gradients before the finite-difference passes overwrite them.
  struct Tensor {
    std::string name;
    std::vector<float>* value;
    std::vector<float> grad;
  };
  std::vector<Tensor> tensors;
  double gmax = 0;
  for (int l : {0, L - 1})
    for (int mi = 0; mi < kNumLoraModules; ++mi) {
      LoraWeights* w = lora.at(l, static_cast<LoraModule>(mi));
      ASSERT_NE(w, nullptr);
      const std::string name =
          "layer " + std::to_string(l) + " " + lora_module_name(static_cast<LoraModule>(mi));
      tensors.push_back({name + " A", &w->A, w->dA});
      tensors.push_back({name + " B", &w->B, w->dB});
      for (float g : w->dA) gmax = std::max(gmax, std::fabs(static_cast<double>(g)));
      for (float g : w->dB) gmax = std::max(gmax, std::fabs(static_cast<double>(g)));
    }
  ASSERT_GT(gmax, 1e-3);
  int checked = 0;
  for (Tensor& t : tensors) {
    const size_t n = t.grad.size();
    size_t arg = 0;
    for (size_t i = 1; i < n; ++i)
      if (std::fabs(t.grad[i]) > std::fabs(t.grad[arg])) arg = i;
    for (size_t idx : {arg, n / 3, n - 1}) {
      float& w = (*t.value)[idx];
      const float saved = w;
      const float h = 1e-2f * std::max(1.0f, std::fabs(saved));
      w = saved + h;
      const double lp = loss_sum(m, lora, b, dropout);
      w = saved - h;
      const double lm = loss_sum(m, lora, b, dropout);
      w = saved;
      const double fd = (lp - lm) / (2.0 * h) / count;
      const double g = t.grad[idx];
      EXPECT_LE(std::fabs(fd - g), 1e-2 * std::fabs(g) + 5e-5 * gmax)
          << t.name << "[" << idx << "]: forward_backward " << g << ", finite differences " << fd;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 2 * 7 * 2 * 3);
}

TEST(ModelFd, LoraGradientsMatchFiniteDifferences) {
  Transformer m(test::tiny_model_dir());
  LoraAdapter lora(m.config(), all_linear(0.0), 7, 0.1);
  m.set_adapter(&lora);
  const Batch b = make_batch({7, 5}, m.config().vocab_size, 1);
  check_against_fd(m, lora, b, Dropout{});
}

TEST(ModelFd, DropoutGradientsMatchFiniteDifferences) {
  Transformer m(test::tiny_model_dir());
  LoraAdapter lora(m.config(), all_linear(0.3), 7, 0.1);
  m.set_adapter(&lora);
  const Batch b = make_batch({7, 5}, m.config().vocab_size, 2);
  const Dropout dropout{0.3f, 1234};
  // The dropped-out loss is deterministic for a seed: the same pass twice agrees exactly.
  EXPECT_EQ(loss_sum(m, lora, b, dropout), loss_sum(m, lora, b, dropout));
  EXPECT_NE(loss_sum(m, lora, b, dropout), loss_sum(m, lora, b, Dropout{}));
  check_against_fd(m, lora, b, dropout);

  // And dropout changes the gradients (the masks reach the backward).
  mean_grads(m, lora, b, dropout);
  std::vector<std::vector<float>> with;
  for (const LoraParam& p : lora.parameters()) with.emplace_back(p.grad, p.grad + p.size);
  mean_grads(m, lora, b, Dropout{});
  double diff = 0, ref = 0;
  size_t i = 0;
  for (const LoraParam& p : lora.parameters()) {
    for (size_t j = 0; j < p.size; ++j) {
      diff = std::max(diff, std::fabs(static_cast<double>(with[i][j]) - p.grad[j]));
      ref = std::max(ref, std::fabs(static_cast<double>(p.grad[j])));
    }
    ++i;
  }
  EXPECT_GT(diff, 0.05 * ref);
}

TEST(ModelFd, DropoutGradientsDoNotDependOnGrouping) {
  Transformer m(test::tiny_model_dir());
  LoraAdapter lora(m.config(), all_linear(0.3), 9, 0.1);
  m.set_adapter(&lora);
  const Batch b = make_batch({7, 5, 4}, m.config().vocab_size, 3);
  const Dropout dropout{0.3f, 99};
  // 512: one group; 12: {7}, {5, 4}; 1: every sequence alone.
  const LossSum whole = mean_grads(m, lora, b, dropout, 512);
  std::vector<std::vector<float>> ref;
  for (const LoraParam& p : lora.parameters()) ref.emplace_back(p.grad, p.grad + p.size);
  for (int group : {12, 1}) {
    const LossSum part = mean_grads(m, lora, b, dropout, group);
    EXPECT_NEAR(part.sum, whole.sum, 1e-5 * whole.sum) << "max_group_tokens " << group;
    size_t i = 0;
    for (const LoraParam& p : lora.parameters()) {
      double diff = 0, scale = 0;
      for (size_t j = 0; j < p.size; ++j) {
        diff = std::max(diff, std::fabs(static_cast<double>(p.grad[j]) - ref[i][j]));
        scale = std::max(scale, std::fabs(static_cast<double>(ref[i][j])));
      }
      EXPECT_GT(scale, 0.0) << p.name;
      EXPECT_LE(diff, 1e-4 * scale) << p.name << " max_group_tokens " << group;
      ++i;
    }
  }
}

}  // namespace
}  // namespace loratune
