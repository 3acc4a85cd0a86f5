// The GGUF writer and parser: a round trip of every value and tensor type, the q8_0 / q4_0
// block layouts on hand-computed blocks, f16 rounding, and the refusals of malformed files.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "core/half.h"
#include "io/gguf.h"
#include "test_util.h"

namespace loratune {
namespace {

std::vector<float> ramp(int n) {
  std::vector<float> x(n);
  for (int i = 0; i < n; ++i) x[i] = std::sin(0.37f * i) * (1.0f + 0.01f * i);
  return x;
}

GgufTensorToWrite tensor(const std::string& name, std::vector<int64_t> ne, GgmlType type,
                         const std::vector<float>& values) {
  return {name, std::move(ne), type, [type, &values](uint8_t* bytes) {
            ggml_quantize(type, values.data(), static_cast<int64_t>(values.size()), bytes);
          }};
}

// A small valid file: the metadata of every kind and a tensor of every type.
std::string write_sample(const std::string& dir, const std::vector<float>& values) {
  const std::string path = dir + "/sample.gguf";
  std::vector<std::pair<std::string, GgufValue>> kv = {
      {"general.architecture", GgufValue::string("qwen2")},
      {"qwen2.block_count", GgufValue::u32(3)},
      {"qwen2.rope.freq_base", GgufValue::f32(1e6f)},
      {"tokenizer.ggml.add_bos_token", GgufValue::boolean(false)},
      {"tokenizer.ggml.bos_token_id", GgufValue::i32(-7)},
      {"tokenizer.ggml.tokens",
       GgufValue::array(GgufValueType::kString,
                        {GgufValue::string("a"), GgufValue::string(""), GgufValue::string("Ġb")})},
      {"tokenizer.ggml.token_type",
       GgufValue::array(GgufValueType::kI32, {GgufValue::i32(1), GgufValue::i32(3)})},
  };
  std::vector<GgufTensorToWrite> tensors;
  for (GgmlType t :
       {GgmlType::kF32, GgmlType::kF16, GgmlType::kBF16, GgmlType::kQ8_0, GgmlType::kQ4_0})
    tensors.push_back(tensor(std::string("t.") + ggml_type_name(t), {64, 2}, t, values));
  write_gguf(path, kv, tensors);
  return path;
}

TEST(Gguf, RoundTripOfEveryValueAndTensorType) {
  test::TempDir dir;
  const std::vector<float> values = ramp(128);
  GgufFile file(write_sample(dir.path(), values));
  const GgufImage& img = file.image();
  EXPECT_EQ(img.version, 3u);
  EXPECT_EQ(img.get("general.architecture")->as_string("a"), "qwen2");
  EXPECT_EQ(img.get("qwen2.block_count")->as_int("b"), 3);
  EXPECT_EQ(img.get("qwen2.rope.freq_base")->as_float("c"), 1e6);
  EXPECT_EQ(std::get<bool>(img.get("tokenizer.ggml.add_bos_token")->value), false);
  EXPECT_EQ(img.get("tokenizer.ggml.bos_token_id")->as_int("d"), -7);
  const auto& tokens = img.get("tokenizer.ggml.tokens")->as_array("e");
  ASSERT_EQ(tokens.size(), 3u);
  EXPECT_EQ(tokens[1].as_string("f"), "");
  EXPECT_EQ(tokens[2].as_string("f"), "Ġb");
  EXPECT_EQ(img.get("tokenizer.ggml.token_type")->element_type, GgufValueType::kI32);
  ASSERT_EQ(img.tensors.size(), 5u);
  for (const GgufTensor& t : img.tensors) {
    EXPECT_EQ(t.ne, (std::vector<int64_t>{64, 2})) << t.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u) << t.name;
    std::vector<float> back(t.numel());
    ggml_dequantize(t.type, t.data, t.numel(), back.data());
    for (int i = 0; i < 128; ++i) {
      const float x = values[i];
      switch (t.type) {
        case GgmlType::kF32:
          ASSERT_EQ(back[i], x);
          break;
        case GgmlType::kF16:
          ASSERT_EQ(back[i], f16_to_float(float_to_f16(x)));
          break;
        case GgmlType::kBF16:
          ASSERT_EQ(back[i], bf16_to_float(float_to_bf16(x)));
          break;
        case GgmlType::kQ8_0:  // within half a step of amax / 127 (amax ≤ 2.3 here)
          ASSERT_NEAR(back[i], x, 2.3 / 127 / 2 * 1.01) << i;
          break;
        case GgmlType::kQ4_0:  // within one step of amax / 8
          ASSERT_NEAR(back[i], x, 2.3 / 8 * 1.01) << i;
          break;
      }
    }
  }
}

TEST(Gguf, BlockLayoutsOnAHandComputedBlock) {
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);  // -16 .. 15
  uint8_t q8[34], q4[18];
  ggml_quantize(GgmlType::kQ8_0, x.data(), 32, q8);
  uint16_t d;
  std::memcpy(&d, q8, 2);
  EXPECT_EQ(d, float_to_f16(16.0f / 127.0f));
  EXPECT_EQ(static_cast<int8_t>(q8[2]), -127);      // -16 · 127/16
  EXPECT_EQ(static_cast<int8_t>(q8[2 + 31]), 119);  // round(15 · 7.9375)
  ggml_quantize(GgmlType::kQ4_0, x.data(), 32, q4);
  std::memcpy(&d, q4, 2);
  EXPECT_EQ(f16_to_float(d), 2.0f);  // the largest magnitude, -16, over -8
  EXPECT_EQ(q4[2] & 0xf, 0);         // -16 / 2 + 8.5 -> 0
  EXPECT_EQ(q4[2 + 15] & 0xf, 8);    // -1 -> 8
  EXPECT_EQ(q4[2] >> 4, 8);          // x[16] = 0 -> 8
  EXPECT_EQ(q4[2 + 15] >> 4, 15);    // x[31] = 15 -> 16, clamped to 15
  float back[32];
  ggml_dequantize(GgmlType::kQ4_0, q4, 32, back);
  EXPECT_EQ(back[0], -16.0f);
  EXPECT_EQ(back[31], 14.0f);
  EXPECT_THROW(ggml_bytes(GgmlType::kQ8_0, 31), Error);
}

TEST(Gguf, HalfRoundsToNearestEven) {
  EXPECT_EQ(float_to_f16(1.0f), 0x3c00);
  EXPECT_EQ(float_to_f16(-2.0f), 0xc000);
  EXPECT_EQ(float_to_f16(0.1f), 0x2e66);
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(float_to_f16(6e-8f), 0x0001);
  EXPECT_EQ(float_to_f16(1e-8f), 0x0000);
  EXPECT_EQ(float_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // a tie: to the even 1.0
  EXPECT_EQ(float_to_f16(1.0f + 3.0f / 2048), 0x3c02);  // a tie: to the even 1 + 2/1024
  for (uint32_t h = 0; h < 0x7c00; ++h)                 // every finite half comes back as itself
    ASSERT_EQ(float_to_f16(f16_to_float(static_cast<uint16_t>(h))), h);
}

TEST(Gguf, RefusesMalformedFiles) {
  test::TempDir dir;
  const std::vector<float> values = ramp(128);
  const std::string good = test::read_file(write_sample(dir.path(), values));
  auto parse = [](const std::string& bytes) {
    return parse_gguf(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "test");
  };
  EXPECT_NO_THROW(parse(good));
  // Every truncation is refused with an Error.
  for (size_t n = 0; n < good.size(); n += (n < 400 ? 1 : 97))
    EXPECT_THROW(parse(good.substr(0, n)), Error) << n << " bytes";
  auto patched = [&](size_t at, const void* v, size_t len) {
    std::string b = good;
    std::memcpy(b.data() + at, v, len);
    return b;
  };
  EXPECT_THROW(parse(patched(0, "GGUG", 4)), Error);
  const uint32_t v2 = 2;
  EXPECT_THROW(parse(patched(4, &v2, 4)), Error);
  const uint64_t absurd = uint64_t{1} << 60;
  EXPECT_THROW(parse(patched(8, &absurd, 8)), Error);   // tensor count
  EXPECT_THROW(parse(patched(16, &absurd, 8)), Error);  // metadata count
  // The last tensor's offset (after its name, dim count, two dims and type) past the end.
  std::string far = good;
  const size_t offset_at = good.find("t.q4_0") + 6 + 4 + 16 + 4;
  const uint64_t past = good.size();
  std::memcpy(far.data() + offset_at, &past, 8);
  EXPECT_THROW(parse(far), Error);
}

}  // namespace
}  // namespace loratune
