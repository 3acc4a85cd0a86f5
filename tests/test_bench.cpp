// loratune bench on the tiny model: every figure prints its JSON line with finite, positive
// values (no timing thresholds), and bad options fail cleanly.
#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace loratune {
namespace {

using test::run_cli;

struct BenchRun {
  int status;
  std::vector<nlohmann::json> lines;  // stdout, one JSON object per line
  std::string err;                    // stderr
};

// Runs `loratune bench ARGS` with stdout and stderr apart.
BenchRun run_bench(const std::string& args) {
  test::TempDir dir;
  const std::string err_path = dir / "stderr.txt";
  const std::string cmd = "'" + test::binary() + "' bench " + args + " 2>'" + err_path + "'";
  BenchRun r{-1, {}, ""};
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  r.status = WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
  r.err = test::read_file(err_path);
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    try {
      r.lines.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::exception& e) {
      ADD_FAILURE() << "stdout line is not JSON: " << line;
    }
  }
  return r;
}

// Every number in `line` is finite and positive.
void expect_finite_positive(const nlohmann::json& line) {
  for (const auto& [key, value] : line.items()) {
    if (!value.is_number()) continue;
    const double v = value.get<double>();
    EXPECT_TRUE(std::isfinite(v) && v > 0) << key << " = " << v << " in " << line.dump();
  }
}

TEST(Bench, SmokeEveryFigureOnTheTinyModel) {
  const std::string args = "--model '" + test::tiny_model_dir() +
                           "' --threads 1 --steps 2 --train-shapes 2x16 --prompt-tokens 8 "
                           "--new-tokens 4 --data '" +
                           test::source_dir() +
                           "/examples/data/sample_seed.json' --seed-records 10 "
                           "--only sgemm,bandwidth,train,seed,generate";
  const BenchRun r = run_bench(args);
  ASSERT_EQ(r.status, 0) << r.err;

  const std::map<std::string, std::vector<std::string>> keys = {
      {"cpu",
       {"model", "flags", "bf16_hardware", "onednn_isa", "openblas_core", "fp32_kernel",
        "bf16_kernel", "fp32_generation_kernel", "bf16_generation_kernel"}},
      {"sgemm",
       {"shape", "m", "k", "n", "blas_forward_gflops", "blas_backward_gflops", "own_forward_gflops",
        "own_backward_gflops", "onednn_f32_forward_gflops", "onednn_f32_backward_gflops",
        "own_bf16_forward_gflops", "own_bf16_backward_gflops", "fastest_f32", "fastest_bf16",
        "chosen_f32"}},
      {"sgemm_peak", {"gflops", "shape", "implementation"}},
      {"bf16_peak", {"gflops", "shape", "implementation"}},
      {"bandwidth", {"gb_per_second", "buffer_bytes"}},
      {"train",
       {"shape", "batch", "seq", "seconds_per_step", "tokens_per_second", "flops_per_token",
        "flop_count", "mfu", "precision", "kernel", "peak_rss_gb", "product_seconds_per_step",
        "product_gflops_in_step", "attention_seconds_per_step"}},
      {"seed",
       {"wall_seconds", "train_examples", "eval_examples", "train_tokens", "steps",
        "tokens_per_second", "peak_rss_gb", "precision", "eval_batches"}},
      {"generate",
       {"prompt_tokens", "new_tokens", "prefill_seconds", "prefill_tokens_per_second",
        "decode_seconds", "decode_tokens_per_second", "weight_bytes_per_token",
        "bound_tokens_per_second", "fraction_of_bound", "matrix_read_gb_per_second",
        "fraction_of_read_bound", "precision", "peak_rss_gb"}},
  };
  std::map<std::string, int> seen;
  for (const auto& line : r.lines) {
    ASSERT_TRUE(line.is_object() && line.contains("figure")) << line.dump();
    const std::string figure = line["figure"].get<std::string>();
    ASSERT_TRUE(keys.count(figure)) << "unexpected figure " << line.dump();
    ++seen[figure];
    for (const std::string& key : keys.at(figure))
      EXPECT_TRUE(line.contains(key)) << figure << " lacks " << key << ": " << line.dump();
    expect_finite_positive(line);
    // The rates that choose the bf16 kernel, where the CPU has AVX512-BF16.
    if (figure == "cpu" &&
        line["flags"].get<std::string>().find("avx512_bf16") != std::string::npos)
      for (const char* key : {"bf16_dot_gflops_per_thread", "fp32_fma_gflops_per_thread"}) {
        EXPECT_TRUE(line.contains(key)) << line.dump();
      }
    // LORATUNE_MAX_ISA caps oneDNN's JIT too (CI's passes as on smaller CPUs), also when the
    // cpu figure asks oneDNN first.
    const std::string flags = figure == "cpu" ? line["flags"].get<std::string>() : "";
    if (flags.find("capped") != std::string::npos) {
      const std::string isa = line["onednn_isa"];
      EXPECT_EQ(isa.find("amx"), std::string::npos) << line.dump();
      if (flags.find("=avx512_bf16") == std::string::npos) {
        EXPECT_EQ(isa.find("bf16"), std::string::npos) << line.dump();
      }
      if (flags.find("=avx2") != std::string::npos) {
        EXPECT_EQ(isa, "avx2") << line.dump();
      }
    }
    if (figure == "sgemm" && r.lines[0]["bf16_kernel"] == "onednn-bf16") {
      EXPECT_TRUE(line.contains("onednn_bf16_forward_gflops")) << line.dump();
    }
  }
  // The tiny model's q_proj and o_proj share a shape: five distinct linear shapes.
  EXPECT_EQ(seen["sgemm"], 5);
  for (const char* figure : {"cpu", "sgemm_peak", "bf16_peak", "bandwidth"})
    EXPECT_EQ(seen[figure], 1) << figure;
  // train, seed and generate once per mode: fp32, then bf16.
  std::map<std::string, std::vector<std::string>> precisions;
  for (const auto& line : r.lines)
    if (line.contains("precision"))
      precisions[line["figure"]].push_back(line["precision"].get<std::string>());
  for (const char* figure : {"train", "seed", "generate"})
    EXPECT_EQ(precisions[figure], (std::vector<std::string>{"fp32", "bf16"})) << figure;
  for (const auto& line : r.lines) {
    if (line["figure"] == "train") {
      EXPECT_EQ(line["shape"], "2x16");
      const bool bf16 = line["precision"] == "bf16";
      EXPECT_TRUE(line.contains(bf16 ? "bf16_peak_gflops" : "sgemm_peak_gflops")) << line.dump();
      EXPECT_EQ(line["kernel"], r.lines[0][bf16 ? "bf16_kernel" : "fp32_kernel"]) << line.dump();
      // The products with frozen weights lie inside the step, and are counted once each: their
      // flops are most of the step's (all but attention's, the layer-0 input gradients that
      // no LoRA needs, and the lm_head on the last position of each sequence), never more.
      // Attention is timed apart from them, inside the step too.
      const double step = line["seconds_per_step"], product = line["product_seconds_per_step"];
      const double attention = line["attention_seconds_per_step"];
      EXPECT_GT(attention, 0.0) << line.dump();
      EXPECT_LE(product + attention, step) << line.dump();
      const double flops = product * line["product_gflops_in_step"].get<double>() * 1e9;
      const double step_flops = line["flops_per_token"].get<double>() *
                                line["batch"].get<double>() * line["seq"].get<double>();
      EXPECT_LE(flops, step_flops * 1.0001) << line.dump();
      EXPECT_GE(flops, step_flops * 0.5) << line.dump();
    }
    if (line["figure"] == "seed") {  // 10 records split 80/20, batch 4: 2 steps, 1 eval batch
      EXPECT_EQ(line["train_examples"], 8);
      EXPECT_EQ(line["eval_examples"], 2);
      EXPECT_EQ(line["steps"], 2);
      EXPECT_EQ(line["eval_batches"], 1);
      EXPECT_FALSE(line.contains("peer")) << "no peer run of a 10-record job was measured";
    }
    if (line["figure"] == "generate") {
      EXPECT_EQ(line["prompt_tokens"], 8);
      EXPECT_EQ(line["new_tokens"], 4);
      EXPECT_EQ(line["matrix_reads"], 2) << "one read before the 4 steps, one after";
      // Generation's own kernels: row-invariant ones (the own kernels in fp32).
      const bool bf16 = line["precision"] == "bf16";
      EXPECT_EQ(line["kernel"],
                r.lines[0][bf16 ? "bf16_generation_kernel" : "fp32_generation_kernel"])
          << line.dump();
    }
  }
  // The table on stderr.
  EXPECT_NE(r.err.find("figure"), std::string::npos) << r.err;
  for (const char* row : {"cpu", "sgemm_peak", "bf16_peak", "bandwidth", "train 2x16 fp32",
                          "train 2x16 bf16", "seed bf16", "generate decode bf16"})
    EXPECT_NE(r.err.find(row), std::string::npos) << row << "\n" << r.err;
}

TEST(Bench, SeedWithoutDataIsSkippedWithANote) {
  const BenchRun r = run_bench("--model '" + test::tiny_model_dir() + "' --only seed");
  EXPECT_EQ(r.status, 0) << r.err;
  ASSERT_EQ(r.lines.size(), 1u);  // the cpu line alone
  EXPECT_EQ(r.lines[0]["figure"], "cpu");
  EXPECT_NE(r.err.find("no --data: the seed figure is skipped"), std::string::npos) << r.err;
}

TEST(Bench, BadOptionsFailCleanly) {
  test::TempDir dir;
  const std::string model = "--model '" + test::tiny_model_dir() + "' ";
  struct Case {
    std::string args, fragment;
    int status;
  };
  const Case cases[] = {
      {model + "--only sgemm,nope", "unknown figure 'nope'", 2},
      {"--model '" + (dir / "missing") + "' --only sgemm", "model folder not found", 1},
      {model + "--only seed --data '" + (dir / "none.json") + "'", "cannot read the data file", 1},
      {model + "--only train --train-shapes 4x", "bad train shape '4x'", 2},
      {model + "--only train --steps 0", "--steps must be a positive integer", 2},
      {model + "--threads -1", "--threads must be a positive integer", 2},
      {model + "--bf16 maybe", "--bf16 takes both, true or false", 2},
      {model + "--only generate --prompt-tokens 4000 --new-tokens 200",
       "exceed max_position_embeddings", 2},
  };
  for (const Case& c : cases) {
    const test::CommandResult r = run_cli("bench " + c.args);
    EXPECT_EQ(r.status, c.status) << c.args << "\n" << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << c.args << "\n" << r.output;
    EXPECT_NE(r.output.find(c.fragment), std::string::npos) << c.args << "\n" << r.output;
  }
}

}  // namespace
}  // namespace loratune
