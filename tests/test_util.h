// Helpers shared by the tests: scratch folders, running the CLI, reading outputs.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "core/half.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "ops/backend.h"

namespace loratune::test {

inline std::string source_dir() {
  return LORATUNE_SOURCE_DIR;
}
inline std::string shared_dir() {
  return source_dir() + "/../shared";
}
inline std::string binary() {
  return LORATUNE_BINARY;
}

// A fresh folder under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base ? base : "/tmp") + "/loratune_test_XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed");
    path_ = buf.data();
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Sets the run's matrix backend for the weights loaded in its lifetime; restores the old one.
class BackendScope {
 public:
  BackendScope(ops::Precision precision, ops::WeightFormat format) : saved_(ops::backend()) {
    ops::set_backend({precision, format});
  }
  explicit BackendScope(ops::WeightFormat format)
      : BackendScope(ops::is_bf16(format) ? ops::Precision::kBF16 : ops::Precision::kF32, format) {}
  ~BackendScope() { ops::set_backend(saved_); }
  BackendScope(const BackendScope&) = delete;
  BackendScope& operator=(const BackendScope&) = delete;

 private:
  ops::Backend saved_;
};

// One value rounded to bf16 (to nearest even) and widened back.
inline float bf16_round(float x) {
  return bf16_to_float(float_to_bf16(x));
}

// x rounded to bf16 where `format` multiplies in bf16 (its kernels round their inputs), so
// that an fp32 reference sees the same operands.
inline std::vector<float> bf16_operands(std::vector<float> x, ops::WeightFormat format) {
  if (ops::is_bf16(format))
    for (float& v : x) v = bf16_round(v);
  return x;
}

// The fp32 formats: the own AVX2 kernels and oneDNN's fp32 matmul run on every CPU that
// loratune runs on, whichever the run would choose.
inline const ops::WeightFormat kF32Formats[] = {ops::WeightFormat::kBlocksF32,
                                                ops::WeightFormat::kRowsF32};

struct CommandResult {
  int status;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line and captures its standard output.
inline CommandResult run_shell(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return {-1, "popen failed"};
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  return {WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc), out};
}

// Runs `loratune ARGS` through the shell and captures its output.
inline CommandResult run_cli(const std::string& args, const std::string& env = "") {
  return run_shell(env + " '" + binary() + "' " + args + " 2>&1");
}

// A file under tests/golden/ (see its README.md).
inline std::string golden(const std::string& name) {
  return source_dir() + "/tests/golden/" + name;
}

// An I32 tensor of a golden file (ids, labels) as ints.
inline std::vector<int> read_i32(const TensorInfo& t) {
  std::vector<int> v(static_cast<size_t>(t.numel()));
  std::memcpy(v.data(), t.data, v.size() * sizeof(int));
  return v;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline void write_file(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary);
  out << content;
}

// A tiny model made once per test binary run (deterministic: same seed, same weights), with
// `init-model` flags `flags`.
inline std::string make_tiny_model(const std::string& name, const std::string& flags) {
  static TempDir dir;
  const std::string path = dir.path() + "/" + name;
  CommandResult r = run_cli("init-model --preset tiny --seed 0 " + flags + " --out '" + path + "'");
  if (r.status != 0) ADD_FAILURE() << r.output;
  return path;
}

// HF's initialisation (N(0, 0.02²)), as the golden models: logits of order 1, for numerics.
inline const std::string& tiny_model_dir() {
  static const std::string path = make_tiny_model("hf", "--init hf");
  return path;
}

// The default scaled initialisation: a tiny model that can learn (trainer tests).
inline const std::string& learnable_tiny_model_dir() {
  static const std::string path = make_tiny_model("scaled", "");
  return path;
}

// The real Qwen2 tokenizer in ../shared (absent there: tests that need it skip).
inline std::string qwen2_tokenizer_dir() {
  return shared_dir() + "/tokenizer/qwen2";
}
inline bool have_qwen2_tokenizer() {
  std::ifstream in(qwen2_tokenizer_dir() + "/tokenizer.json");
  return in.good();
}
// Why a test that needs the Qwen2 tokenizer skips.
inline constexpr const char* kNeedsQwen2Tokenizer = "needs ../shared (the Qwen2 tokenizer)";
#define SKIP_WITHOUT_QWEN2_TOKENIZER()                      \
  do {                                                      \
    if (!loratune::test::have_qwen2_tokenizer())            \
      GTEST_SKIP() << loratune::test::kNeedsQwen2Tokenizer; \
  } while (0)

// The scaled tiny model with the real Qwen2 tokenizer and its 151,936-row vocabulary.
inline const std::string& qwen2_vocab_tiny_model_dir() {
  static const std::string path = make_tiny_model(
      "qwen2_vocab", "--tokenizer '" + qwen2_tokenizer_dir() + "' --vocab-size 151936");
  return path;
}

// Four instruction records a tiny model can learn by heart (the trained-answer tests).
inline constexpr const char* kFourAnswers =
    "{\"instruction\": \"What is the capital of France?\", \"input\": \"\", "
    "\"output\": \"Paris.\"}\n"
    "{\"instruction\": \"Translate to Chinese.\", \"input\": \"dog\", \"output\": \"狗\"}\n"
    "{\"instruction\": \"2 + 3 =\", \"input\": \"\", \"output\": \"5\"}\n"
    "{\"instruction\": \"Say hi.\", \"output\": \"hi!\"}\n";

// The records of a trainer_log.jsonl, in order.
inline std::vector<Json> log_records(const std::string& path) {
  std::vector<Json> out;
  std::istringstream in(read_file(path));
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(Json::parse(line));
  return out;
}

}  // namespace loratune::test
