// export-gguf on a tiny model with the real Qwen2 tokenizer: llama.cpp's names, dims, types,
// hyper-parameters and tokenizer metadata, the merged model's weights, and the LoRA GGUF.
#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "export/gguf_export.h"
#include "io/gguf.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/weights.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

namespace loratune {
namespace {

const std::string& model_dir() {
  return test::qwen2_vocab_tiny_model_dir();
}

std::vector<float> dequantized(const GgufTensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  ggml_dequantize(t.type, t.data, t.numel(), v.data());
  return v;
}

TEST(GgufExport, ModelNamesDimsTypesAndMetadata) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  test::TempDir dir;
  const ModelConfig config = load_model_config(model_dir());
  for (const char* type : {"f32", "q8_0"}) {
    const std::string out = dir / (std::string(type) + ".gguf");
    test::CommandResult r = test::run_cli("export-gguf --model '" + model_dir() + "' --out '" +
                                          out + "' --type " + type);
    ASSERT_EQ(r.status, 0) << r.output;
    GgufFile file(out);
    const GgufImage& img = file.image();
    EXPECT_EQ(img.get("general.architecture")->as_string(""), "qwen2");
    EXPECT_EQ(img.get("qwen2.block_count")->as_int(""), config.num_hidden_layers);
    EXPECT_EQ(img.get("qwen2.embedding_length")->as_int(""), config.hidden_size);
    EXPECT_EQ(img.get("qwen2.feed_forward_length")->as_int(""), config.intermediate_size);
    EXPECT_EQ(img.get("qwen2.attention.head_count")->as_int(""), config.num_attention_heads);
    EXPECT_EQ(img.get("qwen2.attention.head_count_kv")->as_int(""), config.num_key_value_heads);
    EXPECT_EQ(img.get("qwen2.context_length")->as_int(""), config.max_position_embeddings);
    EXPECT_FLOAT_EQ(img.get("qwen2.rope.freq_base")->as_float(""), config.rope_theta);
    EXPECT_EQ(img.get("tokenizer.ggml.model")->as_string(""), "gpt2");
    EXPECT_EQ(img.get("tokenizer.ggml.pre")->as_string(""), "qwen2");
    // Tokens: one per embedding row, as the vocabulary spells them; merges in rank order.
    const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(test::qwen2_tokenizer_dir());
    const auto& tokens = img.get("tokenizer.ggml.tokens")->as_array("");
    ASSERT_EQ(static_cast<int>(tokens.size()), config.vocab_size);
    EXPECT_EQ(tokens[1].as_string(""), std::string(tok.token_string(1)));
    EXPECT_EQ(tokens[151643].as_string(""), "<|endoftext|>");
    EXPECT_EQ(img.get("tokenizer.ggml.token_type")->as_array("")[151643].as_int(""), 3);
    EXPECT_EQ(tokens[151935].as_string(""), "[PAD151935]");
    const auto& merges = img.get("tokenizer.ggml.merges")->as_array("");
    EXPECT_EQ(merges.size(), tok.merges().size());
    EXPECT_EQ(merges[0].as_string(""), "Ġ Ġ");  // Qwen2's merges.txt starts with "Ġ Ġ"
    EXPECT_EQ(img.get("tokenizer.ggml.eos_token_id")->as_int(""), tok.eos_id());
    // Tensors: tied embeddings (no output.weight), matrices [in, out] in the chosen type,
    // norms and biases f32.
    EXPECT_EQ(img.find("output.weight"), nullptr);
    const GgufTensor* q = img.find("blk.1.attn_q.weight");
    ASSERT_NE(q, nullptr);
    EXPECT_EQ(q->ne, (std::vector<int64_t>{config.hidden_size, config.hidden_size}));
    EXPECT_EQ(q->type, std::string(type) == "f32" ? GgmlType::kF32 : GgmlType::kQ8_0);
    EXPECT_EQ(img.find("blk.1.attn_q.bias")->type, GgmlType::kF32);
    EXPECT_EQ(img.find("blk.0.ffn_norm.weight")->type, GgmlType::kF32);
    EXPECT_EQ(img.find("blk.0.ffn_down.weight")->ne,
              (std::vector<int64_t>{config.intermediate_size, config.hidden_size}));
    // The values: the file's own, exactly in f32 and within q8_0's step otherwise.
    SafetensorsFile st(model_dir() + "/model.safetensors");
    const float* w =
        reinterpret_cast<const float*>(st.find("model.layers.1.self_attn.q_proj.weight")->data);
    const std::vector<float> back = dequantized(*q);
    for (size_t i = 0; i < back.size(); ++i)
      ASSERT_NEAR(back[i], w[i], std::string(type) == "f32" ? 0.0 : 0.02) << i;
  }
}

TEST(GgufExport, MergedAndLoraOnly) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  test::TempDir dir;
  const ModelConfig config = load_model_config(model_dir());
  LoraConfig lc;
  lc.r = 4;
  lc.lora_alpha = 12;
  lc.target_modules = {"q_proj", "v_proj", "down_proj"};
  lc.base_model_name_or_path = model_dir();
  LoraAdapter adapter(config, lc, 3, 0.05);
  adapter.save(dir / "adapter");
  test::CommandResult r = test::run_cli("export-gguf --adapter '" + dir / "adapter" +
                                        "' --lora-only --out '" + dir / "lora.gguf" + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  GgufFile lora(dir / "lora.gguf");
  const GgufImage& img = lora.image();
  EXPECT_EQ(img.get("general.type")->as_string(""), "adapter");
  EXPECT_EQ(img.get("adapter.type")->as_string(""), "lora");
  EXPECT_FLOAT_EQ(img.get("adapter.lora.alpha")->as_float(""), 12.0);  // alpha / r = scale
  EXPECT_EQ(img.tensors.size(), 2u * 3 * config.num_hidden_layers);
  const GgufTensor* a = img.find("blk.0.ffn_down.weight.lora_a");
  const GgufTensor* b = img.find("blk.0.ffn_down.weight.lora_b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->ne, (std::vector<int64_t>{config.intermediate_size, 4}));
  EXPECT_EQ(b->ne, (std::vector<int64_t>{4, config.hidden_size}));
  const LoraWeights* w = adapter.at(0, LoraModule::kDown);
  EXPECT_EQ(dequantized(*a), w->A);
  EXPECT_EQ(dequantized(*b), w->B);

  // Merged: W + s·B·A, the merge command's values.
  r = test::run_cli("export-gguf --model '" + model_dir() + "' --adapter '" + dir / "adapter" +
                    "' --type f32 --out '" + dir / "merged.gguf" + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  r = test::run_cli("merge --model '" + model_dir() + "' --adapter '" + dir / "adapter" +
                    "' --out '" + dir / "merged" + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  GgufFile merged(dir / "merged.gguf");
  SafetensorsFile st(dir / "merged/model.safetensors");
  const TensorInfo* down = st.find("model.layers.0.mlp.down_proj.weight");
  const std::vector<float> back = dequantized(*merged.image().find("blk.0.ffn_down.weight"));
  ASSERT_EQ(static_cast<int64_t>(back.size()), down->numel());
  EXPECT_EQ(std::memcmp(back.data(), down->data, down->nbytes), 0);
}

// loratune reads what it wrote: the f32 export evaluates and generates exactly as the folder,
// q8_0 close to it, and training starts from a GGUF file.
TEST(GgufExport, ModelFileReadsBackAsTheFolder) {
  SKIP_WITHOUT_QWEN2_TOKENIZER();
  test::TempDir dir;
  for (const char* type : {"f32", "q8_0"}) {
    test::CommandResult r = test::run_cli("export-gguf --model '" + model_dir() + "' --out '" +
                                          dir / (std::string(type) + ".gguf") + "' --type " + type);
    ASSERT_EQ(r.status, 0) << r.output;
  }
  const std::string data = test::source_dir() + "/examples/data/sample_seed.json";
  auto eval = [&](const std::string& model) {
    test::CommandResult r = test::run_cli("eval --model '" + model + "' --data '" + data +
                                          "' --json --bf16 false --threads 1 2>/dev/null");
    EXPECT_EQ(r.status, 0) << r.output;
    return Json::parse(r.output)["eval_loss"].get<double>();
  };
  const double folder = eval(model_dir());
  EXPECT_EQ(eval(dir / "f32.gguf"), folder);
  EXPECT_NEAR(eval(dir / "q8_0.gguf"), folder, 0.01 * folder);
  auto greedy = [&](const std::string& model) {
    test::CommandResult r = test::run_cli("generate --model '" + model +
                                          "' --prompt '你好, world' --max-new-tokens 16 "
                                          "--bf16 false --threads 1 --ids-out '" +
                                          dir / "ids.json" + "'");
    EXPECT_EQ(r.status, 0) << r.output;
    return read_json_file(dir / "ids.json");
  };
  EXPECT_EQ(greedy(dir / "f32.gguf"), greedy(model_dir()));
  const tokenizer::Tokenizer a = tokenizer::Tokenizer::load(model_dir());
  const tokenizer::Tokenizer b = tokenizer::Tokenizer::load(dir / "f32.gguf");
  for (const char* text :
       {"Hello world, 你好 123", "<|im_start|>user\n  tabs\tand\r\nlines", "emoji 😀 and ÿ bytes"})
    EXPECT_EQ(a.encode(text), b.encode(text)) << text;
  EXPECT_EQ(a.eos_id(), b.eos_id());
  test::CommandResult r =
      test::run_cli("train --model '" + dir / "q8_0.gguf" + "' --data '" + data +
                    "' --output-dir '" + dir / "out" + "' --max-steps 2 --threads 1");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(std::filesystem::exists(dir / "out/final_model/adapter_model.safetensors"));
}

TEST(GgufExport, ClearErrors) {
  EXPECT_THROW(gguf_tensor_name("model.layers.0.mlp.act_fn.weight"), Error);
  EXPECT_THROW(parse_export_type("q5_k"), UsageError);
  EXPECT_EQ(gguf_tensor_name("model.layers.12.self_attn.o_proj.weight"),
            "blk.12.attn_output.weight");
  test::CommandResult r = test::run_cli("export-gguf --model '" + test::tiny_model_dir() +
                                        "' --out /nonexistent-dir/x.gguf");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("error"), std::string::npos) << r.output;
  // A GGUF of another architecture is refused with a clear message.
  test::TempDir dir;
  write_gguf(dir / "llama.gguf", {{"general.architecture", GgufValue::string("llama")}}, {});
  r = test::run_cli("eval --model '" + dir / "llama.gguf" + "' --data x.json");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("not qwen2"), std::string::npos) << r.output;
  EXPECT_EQ(hf_tensor_name("blk.3.ffn_up.weight"), "model.layers.3.mlp.up_proj.weight");
  EXPECT_EQ(hf_tensor_name("blk.0.attn_q_norm.weight"), "model.layers.0.self_attn.q_norm.weight");
  EXPECT_THROW(hf_tensor_name("blk.0.ffn_gate_exps.weight"), Error);
  // Families llama.cpp's loaders that the export writes do not cover are refused.
  ASSERT_EQ(
      test::run_cli("init-model --preset tiny-mistral --out '" + dir / "mistral" + "'").status, 0);
  r = test::run_cli("export-gguf --model '" + dir / "mistral" + "' --out '" + dir / "m.gguf" + "'");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("cannot write Mistral's sliding window of 20 positions"),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "m.gguf"));
  // So is a SentencePiece-style vocabulary cut at each "▁" (the tokenizer fuzzer's seed),
  // which llama.cpp's tokenizer does not do.
  std::filesystem::create_directories(dir / "sp");
  std::filesystem::copy_file(test::source_dir() + "/fuzz/seeds/fuzz_tokenizer/metaspace.json",
                             dir / "sp/tokenizer.json");
  ASSERT_EQ(test::run_cli("init-model --preset tiny-llama --tokenizer '" + dir / "sp" +
                          "' --out '" + dir / "llama_sp" + "'")
                .status,
            0);
  r = test::run_cli("export-gguf --model '" + dir / "llama_sp" + "' --out '" + dir / "s.gguf" +
                    "'");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("no llama.cpp tokenizer for this one (metaspace-split)"),
            std::string::npos)
      << r.output;
}

}  // namespace
}  // namespace loratune
