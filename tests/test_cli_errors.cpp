// Bad input gives one clear line and a non-zero exit, never a crash.
#include <algorithm>
#include <cstdio>

#include "model/init_model.h"
#include "model/weights.h"
#include "test_util.h"

namespace loratune {
namespace {

using test::run_cli;

// Copies the tiny model into a scratch folder so a test can damage it.
std::string copy_tiny(const test::TempDir& dir) {
  std::string dst = dir / "m";
  std::system(("cp -r '" + test::tiny_model_dir() + "' '" + dst + "'").c_str());
  return dst;
}

// Expects a failure whose single output line mentions `fragment` (`env`: variables set for
// the run, "NAME=value ...").
void expect_clean_failure(const std::string& args, const std::string& fragment, int status = 1,
                          const std::string& env = "") {
  test::CommandResult r = run_cli(args, env);
  EXPECT_EQ(r.status, status) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_NE(r.output.find(fragment), std::string::npos) << r.output;
}

std::string logits_cmd(const std::string& model, const std::string& ids = "1,2,3") {
  return "debug logits --model '" + model + "' --ids " + ids + " --out /dev/null";
}

// Rewrites model.safetensors with its JSON header edited by `edit`.
void edit_header(const std::string& path, std::string (*edit)(std::string)) {
  std::string file = test::read_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[i]);
  std::string header = edit(file.substr(8, n));
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(uint64_t(header.size()) >> (8 * i));
  test::write_file(path, out + header + file.substr(8 + n));
}

TEST(CliErrors, ModelFolderProblems) {
  test::TempDir dir;
  expect_clean_failure(logits_cmd(dir / "nope"), "model folder not found");
  expect_clean_failure(logits_cmd(dir.path()), "no config.json");
  std::string m = copy_tiny(dir);
  std::string config = test::read_file(m + "/config.json");
  std::string other = config;
  other.replace(other.find("\"qwen2\""), 7, "\"gpt2\"");
  test::write_file(m + "/config.json", other);
  expect_clean_failure(logits_cmd(m), "unsupported model_type 'gpt2'");
  other = config;
  other.replace(other.find("\"rope_theta\""), 0,
                "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}, ");
  test::write_file(m + "/config.json", other);
  expect_clean_failure(logits_cmd(m), "unsupported rope_scaling type 'yarn'");
  test::write_file(m + "/config.json", "{\"model_type\": \"qwen2\",");
  expect_clean_failure(logits_cmd(m), "invalid JSON");
}

TEST(CliErrors, CorruptSafetensors) {
  test::TempDir dir;
  std::string m = copy_tiny(dir);
  std::string weights = m + "/model.safetensors";
  const std::string good = test::read_file(weights);

  test::write_file(weights, good.substr(0, good.size() / 2));
  expect_clean_failure(logits_cmd(m), "out of range");

  test::write_file(weights, good.substr(0, 5));
  expect_clean_failure(logits_cmd(m), "too small");

  std::string bad_len = good;
  bad_len[6] = 1;  // header length ~2^48
  test::write_file(weights, bad_len);
  expect_clean_failure(logits_cmd(m), "past the end");

  test::write_file(weights, good);
  edit_header(weights, [](std::string h) {
    h.replace(h.find("\"F32\""), 5, "\"F99\"");
    return h;
  });
  expect_clean_failure(logits_cmd(m), "unknown dtype");

  test::write_file(weights, good);  // same byte size, wrong type for weights
  edit_header(weights, [](std::string h) {
    h.replace(h.find("\"F32\""), 5, "\"I32\"");
    return h;
  });
  expect_clean_failure(logits_cmd(m), "weights must be F32, BF16 or F16");

  test::write_file(weights, good);
  edit_header(weights, [](std::string h) {
    size_t p = h.find("model.norm.weight");
    h.replace(p, 17, "model.norm.wrongs");
    return h;
  });
  expect_clean_failure(logits_cmd(m), "missing tensor 'model.norm.weight'");
}

TEST(CliErrors, ShapeNotMatchingConfig) {
  test::TempDir dir;
  std::string m = copy_tiny(dir);
  std::string config = test::read_file(m + "/config.json");
  config.replace(config.find("\"intermediate_size\": 128"), 24, "\"intermediate_size\": 96");
  test::write_file(m + "/config.json", config);
  expect_clean_failure(logits_cmd(m), "config.json implies [96, 64]");
}

TEST(CliErrors, BadIdsAndOptions) {
  const std::string& m = test::tiny_model_dir();
  expect_clean_failure(logits_cmd(m, "1,512"), "token id 512 out of range");
  expect_clean_failure(logits_cmd(m, "1,x"), "not an integer", 2);
  expect_clean_failure("generate --model '" + m + "' --prompt-ids 1,-4", "out of range", 2);
  expect_clean_failure("generate --model '" + m + "' --prompt-ids 1 --bogus", "unknown option", 2);
  expect_clean_failure("generate --prompt-ids 1", "missing required option --model", 2);
  expect_clean_failure("init-model --preset huge --out /tmp/x", "unknown preset 'huge'", 2);
  expect_clean_failure("frobnicate", "unknown command", 2);
  expect_clean_failure(logits_cmd(m), "unknown LORATUNE_MAX_ISA 'avx512f'", 2,
                       "LORATUNE_MAX_ISA=avx512f");
}

TEST(CliErrors, GeneratePromptProblems) {
  const std::string& m = test::tiny_model_dir();
  expect_clean_failure("generate --model '" + m + "'", "exactly one of", 2);
  expect_clean_failure("generate --model '" + m + "' --prompt hi --prompt-ids 1", "exactly one of",
                       2);
  expect_clean_failure("generate --model '" + m + "' --prompt hi --template nope", "template", 2);
  test::TempDir dir;
  ASSERT_EQ(run_cli("init-model --out '" + dir / "m" + "' --tokenizer '" + dir.path() + "'").status,
            1);
  EXPECT_FALSE(test::read_file(dir / "m/config.json").size());  // nothing written
}

TEST(Generate, TextPromptStreamsTextAndStops) {
  const std::string& m = test::tiny_model_dir();
  test::CommandResult r =
      run_cli("generate --model '" + m + "' --prompt 'hello' --max-new-tokens 8 --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  // Greedy is deterministic: the same call gives the same text.
  EXPECT_EQ(r.output,
            run_cli("generate --model '" + m + "' --prompt 'hello' --max-new-tokens 8").output);
  // The built-in byte-level tokenizer has no merges: the seed prompt's ids are its bytes, and
  // generating from those ids gives the same text.
  std::string ids;
  for (unsigned char ch : std::string("Instruction: hello\nOutput: "))
    ids += (ids.empty() ? "" : ",") + std::to_string(ch);
  EXPECT_EQ(
      r.output,
      run_cli("generate --model '" + m + "' --prompt-ids " + ids + " --max-new-tokens 8").output);
  test::CommandResult sampled = run_cli("generate --model '" + m +
                                        "' --prompt hi --max-new-tokens 3 --do-sample --seed 5 "
                                        "--top-k 20 --top-p 0.9 --temperature 0.7");
  EXPECT_EQ(sampled.status, 0) << sampled.output;
}

TEST(InitModel, PresetParameterCounts) {
  EXPECT_EQ(model_parameter_count(model_preset("qwen2-0.5b")), 494032768);
  EXPECT_EQ(model_parameter_count(model_preset("qwen2-1.5b")), 1543714304);
}

TEST(InitModel, DeterministicAndOverridable) {
  test::TempDir dir;
  const std::string flags =
      " --preset tiny --num-hidden-layers 3 --num-attention-heads 6 "
      "--num-key-value-heads 2 --hidden-size 96 --seed 7";
  ASSERT_EQ(run_cli("init-model --out '" + dir / "a" + "'" + flags).status, 0);
  ASSERT_EQ(run_cli("init-model --threads 1 --out '" + dir / "b" + "'" + flags).status, 0);
  EXPECT_EQ(test::read_file(dir / "a/model.safetensors"),
            test::read_file(dir / "b/model.safetensors"));
  ModelConfig c = load_model_config(dir / "a");
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.head_dim(), 16);
  ASSERT_EQ(run_cli("init-model --out '" + dir / "c" + "' --dtype bf16 --seed 7").status, 0);
  ModelWeights w(dir / "c", load_model_config(dir / "c"));
  EXPECT_EQ(w.parameter_count(), model_parameter_count(model_preset("tiny")));
  test::CommandResult bad = run_cli("init-model --out '" + dir / "d" + "' --num-attention-heads 5");
  EXPECT_EQ(bad.status, 2) << bad.output;
}

}  // namespace
}  // namespace loratune
