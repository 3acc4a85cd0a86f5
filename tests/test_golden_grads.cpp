// LoRA gradients and loss against the PyTorch reference (tools/reference), and packing
// invariance: sequences in one pass or one by one give the same loss and gradients.
#include <cmath>
#include <cstring>
#include <vector>

#include "golden_batch.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/transformer.h"
#include "test_util.h"

namespace loratune {
namespace {

using Batch = test::GoldenBatch;

// Relative error of a gradient tensor: max |a − b| / max |b|.
double rel_error(const float* a, const float* b, size_t n) {
  double diff = 0, ref = 0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
    ref = std::max(ref, std::fabs(double(b[i])));
  }
  return ref > 0 ? diff / ref : diff;
}

void check_grads_once(const std::string& model, const std::string& adapter, const std::string& file,
                      int max_group_tokens) {
  SafetensorsFile g(test::golden(file));
  Transformer m(test::golden("models/" + model));
  LoraAdapter lora = LoraAdapter::load(test::golden("adapters/" + adapter), m.config());
  m.set_adapter(&lora);
  Batch b = test::read_golden_batch(g);
  const int count = test::read_i32(*g.find("num_labelled"))[0];
  LossSum loss = m.forward_backward(b.tokens, b.seqs, b.labels, 1.0f / count, {}, max_group_tokens);
  EXPECT_EQ(loss.count, count);
  const float ref_loss = *reinterpret_cast<const float*>(g.find("loss")->data);
  EXPECT_NEAR(loss.sum / loss.count, ref_loss, 1e-5) << file;
  int checked = 0;
  for (const LoraParam& p : lora.parameters()) {
    const TensorInfo* ref = g.find(p.name);
    ASSERT_NE(ref, nullptr) << p.name;
    ASSERT_EQ(ref->shape, p.shape) << p.name;
    EXPECT_LE(rel_error(p.grad, reinterpret_cast<const float*>(ref->data), p.size), 1e-4)
        << file << " " << p.name;
    ++checked;
  }
  EXPECT_GT(checked, 0);
}

void check_grads(const std::string& model, const std::string& adapter, const std::string& file,
                 int max_group_tokens = 512) {
  for (const ops::WeightFormat f : test::kF32Formats) {
    SCOPED_TRACE(ops::format_name(f));
    const test::BackendScope scope(f);
    check_grads_once(model, adapter, file, max_group_tokens);
  }
}

TEST(GoldenGrads, TinyQV) {
  check_grads("tiny", "tiny_qv", "grads_tiny_qv.safetensors");
}
TEST(GoldenGrads, TinyAllLinear) {
  check_grads("tiny", "tiny_all", "grads_tiny_all.safetensors");
}
TEST(GoldenGrads, RsLora) {
  check_grads("tiny", "tiny_qv_rslora", "grads_tiny_qv_rslora.safetensors");
}
TEST(GoldenGrads, OddShapeAllLinear) {
  check_grads("odd", "odd_all", "grads_odd_all.safetensors");
}
TEST(GoldenGrads, SharpAttentionAllLinear) {
  check_grads("sharp", "sharp_all", "grads_sharp_all.safetensors");
}
TEST(GoldenGrads, LlamaAllLinear) {
  check_grads("tiny_llama", "tiny_llama_all", "grads_tiny_llama_all.safetensors");
  check_grads("tiny_llama_bias", "tiny_llama_bias_all", "grads_tiny_llama_bias_all.safetensors");
}
TEST(GoldenGrads, Qwen3AllLinear) {
  check_grads("tiny_qwen3", "tiny_qwen3_all", "grads_tiny_qwen3_all.safetensors");
}
// Mistral's sliding window of 20 over a 96-token sequence (every token labelled) packed with
// three short ones.
TEST(GoldenGrads, MistralSlidingWindowAllLinear) {
  check_grads("tiny_mistral", "tiny_mistral_all", "grads_tiny_mistral_all.safetensors");
}
TEST(GoldenGrads, DefaultLabels) {
  check_grads("tiny", "tiny_qv", "grads_tiny_qv_default_labels.safetensors");
}
// One sequence per pass must give the same result as all of them packed together.
TEST(GoldenGrads, PackedEqualsOneByOne) {
  check_grads("tiny", "tiny_all", "grads_tiny_all.safetensors", 1);
}

// Gradient accumulation: two passes over halves of the batch, each scaled by the labelled
// count of the whole window, add up to one pass over the whole batch.
TEST(GoldenGrads, AccumulationOverPassesEqualsOnePass) {
  SafetensorsFile g(test::golden("grads_tiny_all.safetensors"));
  Transformer m(test::golden("models/tiny"));
  LoraAdapter lora = LoraAdapter::load(test::golden("adapters/tiny_all"), m.config());
  m.set_adapter(&lora);
  Batch b = test::read_golden_batch(g);
  const int64_t count = count_loss_targets(b.labels, b.seqs);
  const float scale = 1.0f / static_cast<float>(count);
  const int split = b.seqs[1].start;  // first sequence | the rest
  auto part = [&](int from, int to, int first_seq, int end_seq) {
    std::vector<SequenceSpan> seqs;
    for (int i = first_seq; i < end_seq; ++i)
      seqs.push_back({b.seqs[i].start - from, b.seqs[i].length, 0});
    return m.forward_backward(
        std::vector<int>(b.tokens.begin() + from, b.tokens.begin() + to), seqs,
        std::vector<int>(b.labels.begin() + from, b.labels.begin() + to), scale);
  };
  LossSum l1 = part(0, split, 0, 1);
  LossSum l2 = part(split, static_cast<int>(b.tokens.size()), 1, static_cast<int>(b.seqs.size()));
  EXPECT_EQ(l1.count + l2.count, count);
  EXPECT_NEAR((l1.sum + l2.sum) / count, *reinterpret_cast<const float*>(g.find("loss")->data),
              1e-5);
  for (const LoraParam& p : lora.parameters())
    EXPECT_LE(rel_error(p.grad, reinterpret_cast<const float*>(g.find(p.name)->data), p.size), 1e-4)
        << p.name;
}

}  // namespace
}  // namespace loratune
