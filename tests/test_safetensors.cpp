#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace loratune {
namespace {

std::string image(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(n >> (8 * i));
  return out + header + std::string(data_bytes, '\0');
}

SafetensorsHeader parse(const std::string& img) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(img.data()), img.size(), "test");
}

void expect_error(const std::string& img, const std::string& fragment) {
  try {
    parse(img);
    FAIL() << "no error; expected one mentioning '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
  }
}

TEST(Safetensors, ParsesValidHeader) {
  auto h = parse(image(
      R"({"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[24,32]}})",
      32));
  ASSERT_EQ(h.tensors.size(), 2u);
  EXPECT_EQ(h.tensors.at("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(h.tensors.at("b").dtype, DType::BF16);
  EXPECT_EQ(h.tensors.at("b").nbytes, 8u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
}

TEST(Safetensors, RejectsBadHeaders) {
  expect_error("abc", "too small");
  expect_error(image("{}", 0).substr(0, 8) + "x", "past the end");
  expect_error(image("{not json", 0), "not valid JSON");
  expect_error(image("[1,2]", 0), "not a JSON object");
  expect_error(image(R"({"a":{"dtype":"Q4","shape":[1],"data_offsets":[0,4]}})", 4),
               "unknown dtype");
  expect_error(image(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
               "non-negative");
  expect_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4), "need 8");
  expect_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
               "out of range");
  expect_error(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8),
               "out of range");
  expect_error(
      image(
          R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
          8),
      "overlap");
  expect_error(
      image(
          R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})",
          4),
      "too large");
  expect_error(image(R"({"a":{"dtype":"F32","shape":[1]}})", 4), "data_offsets");
  expect_error(image(R"({"__metadata__":{"x":1}})", 0), "not a string");
}

TEST(Safetensors, WriteThenReadRoundTrips) {
  test::TempDir dir;
  std::vector<float> a = {1.5f, -2.0f, 3.25f};
  std::vector<uint16_t> b = {0x3f80, 0x4000};
  write_safetensors(dir / "t.safetensors",
                    {{"a", DType::F32, {3}, a.data()}, {"b", DType::BF16, {1, 2}, b.data()}},
                    {{"format", "pt"}});
  SafetensorsFile f(dir / "t.safetensors");
  ASSERT_NE(f.find("a"), nullptr);
  EXPECT_EQ(std::memcmp(f.find("a")->data, a.data(), 12), 0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(f.find("a")->data) % 8, 0u);  // aligned data section
  EXPECT_EQ(f.find("b")->shape, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
}

TEST(Safetensors, FailedWriteLeavesNoFile) {
  test::TempDir dir;
  float x = 1;
  EXPECT_THROW(write_safetensors(dir / "missing/t.safetensors", {{"x", DType::F32, {1}, &x}}),
               Error);
  EXPECT_EQ(test::run_cli("").status, 2);  // sanity: the binary is there
}

TEST(Safetensors, ShardedFolder) {
  test::TempDir dir;
  float a = 1, b = 2;
  write_safetensors(dir / "model-00001-of-00002.safetensors", {{"a", DType::F32, {1}, &a}});
  write_safetensors(dir / "model-00002-of-00002.safetensors", {{"b", DType::F32, {1}, &b}});
  test::write_file(
      dir / "model.safetensors.index.json",
      R"({"metadata":{},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}})");
  TensorStore store(dir.path());
  EXPECT_EQ(store.size(), 2u);
  EXPECT_EQ(*reinterpret_cast<const float*>(store.get("b").data), 2.0f);
  EXPECT_THROW(store.get("c"), Error);
  test::write_file(
      dir / "model.safetensors.index.json",
      R"({"weight_map":{"a":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
  EXPECT_THROW(TensorStore{dir.path()}, Error);
}

}  // namespace
}  // namespace loratune
