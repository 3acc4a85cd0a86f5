// The forward pass against golden logits from the PyTorch reference (tools/reference).
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/kv_cache.h"
#include "model/transformer.h"
#include "test_util.h"

namespace loratune {
namespace {

// Runs every sequence of the golden file packed in one batch (with the adapter, when one is
// named, applied unmerged) and compares each one's rows.
void check_logits(const std::string& model, const std::string& file,
                  const std::string& adapter = "") {
  SafetensorsFile g(test::golden(file));
  Transformer m(test::golden("models/" + model));
  std::unique_ptr<LoraAdapter> lora;
  if (!adapter.empty()) {
    lora = std::make_unique<LoraAdapter>(
        LoraAdapter::load(test::golden("adapters/" + adapter), m.config()));
    m.set_adapter(lora.get());
  }
  const int V = m.config().vocab_size;
  std::vector<std::vector<int>> seqs;
  for (int i = 0; g.find("ids." + std::to_string(i)); ++i)
    seqs.push_back(test::read_i32(*g.find("ids." + std::to_string(i))));
  ASSERT_FALSE(seqs.empty());
  std::vector<int> tokens, rows;
  std::vector<SequenceSpan> spans;
  for (const auto& s : seqs) {
    spans.push_back({static_cast<int>(tokens.size()), static_cast<int>(s.size()), 0});
    tokens.insert(tokens.end(), s.begin(), s.end());
  }
  for (size_t i = 0; i < tokens.size(); ++i) rows.push_back(static_cast<int>(i));
  std::vector<float> logits(tokens.size() * V);
  m.forward(tokens, spans, nullptr, rows, logits.data());
  for (size_t s = 0; s < seqs.size(); ++s) {
    const TensorInfo& ref = *g.find("logits." + std::to_string(s));
    ASSERT_EQ(ref.shape, (std::vector<int64_t>{static_cast<int64_t>(seqs[s].size()), V}));
    const float* expected = reinterpret_cast<const float*>(ref.data);
    const float* actual = logits.data() + static_cast<size_t>(spans[s].start) * V;
    float max_err = 0;
    for (int64_t i = 0; i < ref.numel(); ++i)
      max_err = std::max(max_err, std::fabs(expected[i] - actual[i]));
    EXPECT_LE(max_err, 1e-4f) << file << " sequence " << s;
  }
}

TEST(GoldenLogits, TinyOneSequence) {
  check_logits("tiny", "logits_tiny_1seq.safetensors");
}
TEST(GoldenLogits, TinyBatch) {
  check_logits("tiny", "logits_tiny_batch.safetensors");
}
TEST(GoldenLogits, OddShapeOneSequence) {
  check_logits("odd", "logits_odd_1seq.safetensors");
}
TEST(GoldenLogits, OddShapeBatch) {
  check_logits("odd", "logits_odd_batch.safetensors");
}
TEST(GoldenLogits, Bf16Weights) {
  check_logits("tiny_bf16", "logits_tiny_bf16_batch.safetensors");
}
TEST(GoldenLogits, ShardedUntiedSharpAttention) {
  check_logits("sharp", "logits_sharp_batch.safetensors");
}
// Llama: no biases, a head_dim of its own, an untied head and llama3 RoPE scaling, over 96
// positions (past its original context of 64); and with attention_bias (q/k/v/o), mlp_bias,
// a tied head and an all-linear adapter.
TEST(GoldenLogits, Llama) {
  for (const ops::WeightFormat f : test::kF32Formats) {
    SCOPED_TRACE(ops::format_name(f));
    const test::BackendScope scope(f);
    check_logits("tiny_llama", "logits_tiny_llama_long.safetensors");
    check_logits("tiny_llama_bias", "logits_tiny_llama_bias_batch.safetensors",
                 "tiny_llama_bias_all");
  }
}
// Qwen3: per-head q/k RMSNorm before RoPE, no biases, head_dim 32 (hidden 64, 4 heads), an
// all-linear adapter, over 96 positions.
TEST(GoldenLogits, Qwen3) {
  for (const ops::WeightFormat f : test::kF32Formats) {
    SCOPED_TRACE(ops::format_name(f));
    const test::BackendScope scope(f);
    check_logits("tiny_qwen3", "logits_tiny_qwen3_long.safetensors", "tiny_qwen3_all");
  }
}
// Mistral: a sliding window of 20 positions, which the 96-token sequence crosses (and a row
// block of 64 with it), packed with a 16-token one, adapter unmerged; then the same sequence
// through the KV cache: a prefill past the window and one token at a time.
TEST(GoldenLogits, MistralSlidingWindow) {
  for (const ops::WeightFormat f : test::kF32Formats) {
    SCOPED_TRACE(ops::format_name(f));
    const test::BackendScope scope(f);
    check_logits("tiny_mistral", "logits_tiny_mistral_long.safetensors", "tiny_mistral_all");
  }
  SafetensorsFile g(test::golden("logits_tiny_mistral_long.safetensors"));
  Transformer m(test::golden("models/tiny_mistral"));
  LoraAdapter lora = LoraAdapter::load(test::golden("adapters/tiny_mistral_all"), m.config());
  m.set_adapter(&lora);
  ASSERT_EQ(m.config().sliding_window, 20);
  const std::vector<int> ids = test::read_i32(*g.find("ids.0"));
  const float* expected = reinterpret_cast<const float*>(g.find("logits.0")->data);
  const int V = m.config().vocab_size, prefill = 30;
  KVCache cache(m.config(), 1, static_cast<int>(ids.size()));
  std::vector<float> step(V);
  auto check_row = [&](int t) {
    float max_err = 0;
    for (int v = 0; v < V; ++v)
      max_err = std::max(max_err, std::fabs(step[v] - expected[static_cast<size_t>(t) * V + v]));
    EXPECT_LE(max_err, 1e-4f) << "position " << t;
  };
  m.forward(std::vector<int>(ids.begin(), ids.begin() + prefill), {{0, prefill, 0}}, &cache,
            {prefill - 1}, step.data());
  check_row(prefill - 1);
  for (int t = prefill; t < static_cast<int>(ids.size()); ++t) {
    m.forward({ids[t]}, {{0, 1, 0}}, &cache, {0}, step.data());
    check_row(t);
  }
}
TEST(GoldenLogits, LongSequences) {
  check_logits("tiny", "logits_tiny_long.safetensors");
  check_logits("sharp", "logits_sharp_long.safetensors");
}

// The CLI path writes the same numbers: debug logits on the golden single sequence.
TEST(GoldenLogits, DebugLogitsCommand) {
  test::TempDir dir;
  SafetensorsFile g(test::golden("logits_tiny_1seq.safetensors"));
  std::vector<int> ids = test::read_i32(*g.find("ids.0"));
  std::string list;
  for (int id : ids) list += (list.empty() ? "" : ",") + std::to_string(id);
  test::CommandResult r =
      test::run_cli("debug logits --model '" + test::golden("models/tiny") + "' --ids " + list +
                    " --out '" + dir / "l.safetensors" + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  SafetensorsFile out(dir / "l.safetensors");
  const TensorInfo& got = *out.find("logits");
  const TensorInfo& ref = *g.find("logits.0");
  ASSERT_EQ(got.shape, ref.shape);
  for (int64_t i = 0; i < ref.numel(); ++i)
    ASSERT_NEAR(reinterpret_cast<const float*>(got.data)[i],
                reinterpret_cast<const float*>(ref.data)[i], 1e-4f);
}

}  // namespace
}  // namespace loratune
