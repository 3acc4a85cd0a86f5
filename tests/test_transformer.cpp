// Whole-model properties: batching, packing and KV-cache decoding agree with a plain forward.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/transformer.h"
#include "model/weights.h"
#include "test_util.h"

namespace loratune {
namespace {

std::vector<float> full_logits(Transformer& m, const std::vector<int>& ids) {
  const int T = static_cast<int>(ids.size());
  std::vector<int> rows(T);
  for (int i = 0; i < T; ++i) rows[i] = i;
  std::vector<float> out(static_cast<size_t>(T) * m.config().vocab_size);
  m.forward(ids, {{0, T, 0}}, nullptr, rows, out.data());
  return out;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

TEST(Transformer, PackedBatchEqualsSeparateRuns) {
  Transformer m(test::tiny_model_dir());
  const int V = m.config().vocab_size;
  std::vector<std::vector<int>> seqs = {{1, 2, 3, 4, 5, 6, 7}, {300, 17}, {42, 9, 8, 511, 0}};
  std::vector<int> tokens, rows;
  std::vector<SequenceSpan> spans;
  for (const auto& s : seqs) {
    spans.push_back({static_cast<int>(tokens.size()), static_cast<int>(s.size()), 0});
    tokens.insert(tokens.end(), s.begin(), s.end());
  }
  for (size_t i = 0; i < tokens.size(); ++i) rows.push_back(static_cast<int>(i));
  std::vector<float> packed(tokens.size() * V);
  m.forward(tokens, spans, nullptr, rows, packed.data());
  size_t offset = 0;
  for (const auto& s : seqs) {
    std::vector<float> single = full_logits(m, s);
    EXPECT_LT(max_abs_diff(single.data(), packed.data() + offset * V, single.size()), 1e-5f);
    offset += s.size();
  }
}

TEST(Transformer, PrefillThenDecodeEqualsFullForward) {
  Transformer m(test::tiny_model_dir());
  const int V = m.config().vocab_size;
  std::vector<int> ids = {5, 80, 81, 82, 300, 301, 7, 7, 7, 256, 1};
  std::vector<float> full = full_logits(m, ids);
  const int prefill = 4;
  KVCache cache(m.config(), 1, static_cast<int>(ids.size()));
  std::vector<float> step(V);
  m.forward(std::vector<int>(ids.begin(), ids.begin() + prefill), {{0, prefill, 0}}, &cache,
            {prefill - 1}, step.data());
  EXPECT_LT(max_abs_diff(step.data(), full.data() + (prefill - 1) * V, V), 1e-5f);
  for (size_t t = prefill; t < ids.size(); ++t) {
    m.forward({ids[t]}, {{0, 1, 0}}, &cache, {0}, step.data());
    EXPECT_LT(max_abs_diff(step.data(), full.data() + t * V, V), 1e-5f) << "position " << t;
  }
  EXPECT_EQ(cache.length(0), static_cast<int>(ids.size()));
}

TEST(Transformer, BatchedDecodeInSeveralSlots) {
  Transformer m(test::tiny_model_dir());
  const int V = m.config().vocab_size;
  std::vector<int> a = {10, 11, 12, 13}, b = {200, 201};
  std::vector<float> fa = full_logits(m, a), fb = full_logits(m, b);
  KVCache cache(m.config(), 2, 8);
  std::vector<float> out(2 * V);
  // Prefill both prompts but their last token, packed, then decode both last tokens at once.
  m.forward({10, 11, 12, 200}, {{0, 3, 0}, {3, 1, 1}}, &cache, {2, 3}, out.data());
  m.forward({13, 201}, {{0, 1, 0}, {1, 1, 1}}, &cache, {0, 1}, out.data());
  EXPECT_LT(max_abs_diff(out.data(), fa.data() + 3 * V, V), 1e-5f);
  EXPECT_LT(max_abs_diff(out.data() + V, fb.data() + 1 * V, V), 1e-5f);
}

// Sequences with different adapters (and none) in one batch, as a server runs them: each
// sequence's logits are those of a pass with its adapter alone, in the prefill and in decode.
TEST(Transformer, EachSequenceWithItsOwnAdapter) {
  Transformer m(test::tiny_model_dir());
  const int V = m.config().vocab_size;
  LoraConfig qv;
  LoraConfig all;
  all.target_modules = {"all-linear"};
  all.r = 4;
  LoraAdapter a(m.config(), qv, 1, 0.05), b(m.config(), all, 2, 0.05);
  const std::vector<int> prompt = {10, 11, 12, 13};
  LoraAdapter* adapters[] = {&a, nullptr, &b, &a};
  std::vector<std::vector<float>> alone;
  for (LoraAdapter* ad : adapters) {
    m.set_adapter(ad);
    alone.push_back(full_logits(m, prompt));
  }
  m.set_adapter(nullptr);
  KVCache cache(m.config(), 4, 8);
  std::vector<int> tokens, rows;
  std::vector<SequenceSpan> spans;
  for (int i = 0; i < 4; ++i) {
    spans.push_back({i * 3, 3, i, adapters[i]});
    tokens.insert(tokens.end(), prompt.begin(), prompt.begin() + 3);
    rows.push_back(i * 3 + 2);
  }
  std::vector<float> out(4 * V);
  m.forward(tokens, spans, &cache, rows, out.data());
  for (int i = 0; i < 4; ++i)
    EXPECT_LT(max_abs_diff(out.data() + i * V, alone[i].data() + 2 * V, V), 1e-5f) << i;
  std::vector<SequenceSpan> decode;
  for (int i = 0; i < 4; ++i) decode.push_back({i, 1, i, adapters[i]});
  m.forward({13, 13, 13, 13}, decode, &cache, {0, 1, 2, 3}, out.data());
  for (int i = 0; i < 4; ++i)
    EXPECT_LT(max_abs_diff(out.data() + i * V, alone[i].data() + 3 * V, V), 1e-5f) << i;
  // The adapters differ, so the check above tells them apart.
  EXPECT_GT(max_abs_diff(alone[0].data(), alone[1].data(), V), 1e-3f);
  EXPECT_GT(max_abs_diff(alone[0].data(), alone[2].data(), V), 1e-3f);
}

// What a server relies on to answer as `generate` does: a sequence's decode logits are bit for
// bit those of its step alone, whichever sequences and adapters share the step, in both modes
// with generation's kernels (every product, the LoRA branches included, is row-invariant).
TEST(Transformer, DecodeLogitsDoNotDependOnTheBatch) {
  const std::pair<std::string, ops::Precision> cases[] = {
      {test::tiny_model_dir(), ops::Precision::kF32},
      {test::golden("models/tiny_bf16"), ops::Precision::kBF16}};
  for (const auto& [dir, precision] : cases) {
    test::BackendScope backend(
        precision, ops::choose_backend(precision, ops::KernelUse::kRowInvariant).format);
    Transformer m(dir);
    const int V = m.config().vocab_size;
    LoraConfig qv;
    LoraConfig all;
    all.target_modules = {"all-linear"};
    all.r = 4;
    const LoraAdapter a(m.config(), qv, 1, 0.05), b(m.config(), all, 2, 0.05);
    const LoraAdapter* adapters[] = {&a, nullptr, &b, &a, &a, &b, &b};
    const int S = 7;
    KVCache alone_cache(m.config(), S, 16), batch_cache(m.config(), S, 16);
    std::vector<float> out(S * V);
    for (int i = 0; i < S; ++i) {  // prompts of 1 to 7 tokens, each prefilled alone
      std::vector<int> prompt;
      for (int t = 0; t <= i; ++t) prompt.push_back((37 * i + 11 * t) % V);
      const SequenceSpan span{0, i + 1, i, adapters[i]};
      for (KVCache* cache : {&alone_cache, &batch_cache})
        m.forward(prompt, {span}, cache, {i}, out.data());
    }
    for (int step = 0; step < 5; ++step) {
      // Every other step two sequences sit out, so that the batch changes size.
      std::vector<int> active, tokens, rows;
      std::vector<SequenceSpan> spans;
      for (int i = 0; i < S; ++i) {
        if (step % 2 == 1 && (i == 1 || i == 4)) continue;
        const int n = static_cast<int>(active.size());
        active.push_back(i);
        tokens.push_back((13 * step + 5 * i + 3) % V);
        spans.push_back({n, 1, i, adapters[i]});
        rows.push_back(n);
      }
      m.forward(tokens, spans, &batch_cache, rows, out.data());
      for (size_t n = 0; n < active.size(); ++n) {
        std::vector<float> one(V);
        m.forward({tokens[n]}, {{0, 1, active[n], adapters[active[n]]}}, &alone_cache, {0},
                  one.data());
        EXPECT_EQ(one, std::vector<float>(out.begin() + n * V, out.begin() + (n + 1) * V))
            << dir << ": sequence " << active[n] << " at step " << step;
      }
    }
  }
}

// Matrices used in place in the memory map (the ranks of a job on one host) give the logits
// of copied ones, bit for bit: f32 rows in fp32 mode, bf16 rows in bf16 mode.
TEST(Transformer, SharedFilePagesGiveTheSameLogits) {
  const std::pair<std::string, ops::Precision> cases[] = {
      {test::tiny_model_dir(), ops::Precision::kF32},
      {test::golden("models/tiny_bf16"), ops::Precision::kBF16}};
  for (const auto& [dir, precision] : cases) {
    test::BackendScope backend(precision, ops::choose_backend(precision).format);
    Transformer copied(dir), shared(dir, true);
    const std::vector<int> ids = {3, 14, 15, 92, 65};
    EXPECT_EQ(full_logits(copied, ids), full_logits(shared, ids)) << dir;
  }
}

TEST(Transformer, RejectsOutOfRangeIdsAndFullCache) {
  Transformer m(test::tiny_model_dir());
  std::vector<float> out(m.config().vocab_size);
  EXPECT_THROW(m.forward({1, 512}, {{0, 2, 0}}, nullptr, {1}, out.data()), Error);
  EXPECT_THROW(m.forward({-1}, {{0, 1, 0}}, nullptr, {0}, out.data()), Error);
  KVCache cache(m.config(), 1, 2);
  EXPECT_THROW(m.forward({1, 2, 3}, {{0, 3, 0}}, &cache, {2}, out.data()), Error);
}

// A BF16 model's matrices are converted only into their packed form; tensors() (what merge
// writes) gives back every tensor with the file's values, in order.
// dropout_mask against its definition, written out plainly: feature i of a token takes half
// i % 2 of splitmix64(base + token · ⌈in/2⌉ + i / 2) as a 32-bit uniform and is kept when that is
// at least ceil(p · 2^32). Sizes with and without whole words and vectors of eight features.
TEST(Dropout, MaskIsItsDefinition) {
  const auto splitmix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  for (float p : {0.05f, 0.5f, 0.9f})
    for (int in : {1, 7, 8, 64, 65, 130, 896}) {
      const Dropout d{p, 77, 1000};
      const int layer = 3, token = 5;
      const LoraModule m = LoraModule::kV;
      std::vector<uint64_t> bits(ops::lora_keep_words(in), ~0ull);
      dropout_mask(bits.data(), d, layer, m, token, in);
      const uint64_t base = splitmix(
          d.seed ^ (static_cast<uint64_t>(layer * kNumLoraModules + static_cast<int>(m)) << 40));
      const uint64_t threshold =
          static_cast<uint64_t>(std::ceil(static_cast<double>(p) * 4294967296.0));
      int kept = 0;
      for (int i = 0; i < 64 * ops::lora_keep_words(in); ++i) {
        const bool bit = (bits[i / 64] >> (i % 64)) & 1;
        if (i >= in) {
          ASSERT_FALSE(bit) << "p " << p << ", in " << in << ": bit " << i << " past the features";
          continue;
        }
        const uint64_t u = splitmix(base + (d.token_offset + token) * ((in + 1) / 2) + i / 2);
        ASSERT_EQ(bit, (i % 2 ? u >> 32 : u & 0xffffffffu) >= threshold)
            << "p " << p << ", in " << in << ", feature " << i;
        kept += bit;
      }
      if (in == 896) {  // 1 − p of them within five standard deviations
        EXPECT_NEAR(kept, (1 - p) * in, 5 * std::sqrt(p * (1 - p) * in)) << "p " << p;
      }
    }
}

TEST(ModelWeights, TensorsOfBf16ModelAreTheFileValues) {
  const std::string dir = test::golden("models/tiny_bf16");
  const ModelConfig config = load_model_config(dir);
  ModelWeights weights(dir, config);
  SafetensorsFile file(dir + "/model.safetensors");
  const std::vector<TensorSpec> specs = model_tensor_specs(config);
  const std::vector<const float*> tensors = weights.tensors();
  ASSERT_EQ(tensors.size(), specs.size());
  for (size_t s = 0; s < specs.size(); ++s) {
    const TensorInfo* t = file.find(specs[s].name);
    ASSERT_NE(t, nullptr) << specs[s].name;
    ASSERT_EQ(t->dtype, DType::BF16) << specs[s].name;
    for (int64_t i = 0; i < t->numel(); ++i) {
      uint16_t h;
      std::memcpy(&h, t->data + 2 * i, 2);
      ASSERT_EQ(tensors[s][i], bf16_to_float(h)) << specs[s].name << " at " << i;
    }
  }
}

}  // namespace
}  // namespace loratune
