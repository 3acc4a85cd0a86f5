// loratune init-model: a Hugging Face Qwen2 folder with deterministic random weights.
#include <cstdio>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "model/init_model.h"
#include "model/model_folder.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace loratune::cli {

namespace {

// Built on first use: the preset names come from a table that another file initialises.
const CommandSpec& spec() {
  static const CommandSpec kSpec = {
      "init-model",
      "--preset NAME --out DIR [options]",
      "Writes config.json, generation_config.json and model.safetensors with deterministic random\n"
      "weights of exactly the preset's shape (overrides change single sizes).",
      {
          {"--preset", "NAME", model_preset_names(), "tiny"},
          {"--out", "DIR", "output folder (created if needed)"},
          {"--seed", "S", "random seed", "0"},
          {"--dtype", "f32|bf16", "weight dtype in the file", "f32"},
          {"--init", "scaled|hf",
           "scaled: matrices N(0, 1/in), embeddings N(0, 0.25); hf: all N(0, 0.02^2)", "scaled"},
          {"--tokenizer", "DIR",
           "copy the tokenizer files of this folder into the model folder (default: write the\n"
           "                              built-in byte-level tokenizer: 256 bytes + special "
           "tokens)"},
          {"--threads", "N", "threads", "all cores"},
          {"--hidden-size", "N", "override hidden_size"},
          {"--intermediate-size", "N", "override intermediate_size"},
          {"--num-hidden-layers", "N", "override num_hidden_layers"},
          {"--num-attention-heads", "N", "override num_attention_heads"},
          {"--num-key-value-heads", "N", "override num_key_value_heads"},
          {"--vocab-size", "N", "override vocab_size"},
          {"--max-position-embeddings", "N", "override max_position_embeddings"},
          {"--rope-theta", "X", "override rope_theta"},
          {"--rms-norm-eps", "X", "override rms_norm_eps"},
          {"--tie-word-embeddings", "true|false", "override tie_word_embeddings"},
          {"--head-dim", "N", "override head_dim (attention width per head)"},
          {"--attention-bias", "true|false", "llama/mistral: biases on q/k/v/o"},
          {"--mlp-bias", "true|false", "llama/mistral: biases on gate/up/down"},
          {"--sliding-window", "N",
           "mistral: override sliding_window (0: attention over all positions)"},
      }};
  return kSpec;
}

int positive_int(const ParsedArgs& a, const std::string& name, int current) {
  long long v = a.integer(name, current);
  if (v <= 0 || v > (1 << 30)) throw UsageError(name + " must be a positive integer");
  return static_cast<int>(v);
}

// 256 byte tokens and <|endoftext|>, <|im_start|>, <|im_end|>.
constexpr int kByteLevelVocab = 259;

}  // namespace

int run_init_model(const Args& args) {
  ParsedArgs a = parse_args(spec(), args);
  const std::string out = a.required("--out");
  ModelConfig c = model_preset(a.str("--preset", "tiny"));
  c.hidden_size = positive_int(a, "--hidden-size", c.hidden_size);
  c.intermediate_size = positive_int(a, "--intermediate-size", c.intermediate_size);
  c.num_hidden_layers = positive_int(a, "--num-hidden-layers", c.num_hidden_layers);
  c.num_attention_heads = positive_int(a, "--num-attention-heads", c.num_attention_heads);
  c.num_key_value_heads = positive_int(a, "--num-key-value-heads", c.num_key_value_heads);
  c.vocab_size = positive_int(a, "--vocab-size", c.vocab_size);
  c.max_position_embeddings =
      positive_int(a, "--max-position-embeddings", c.max_position_embeddings);
  c.rope_theta = a.number("--rope-theta", c.rope_theta);
  c.rms_norm_eps = a.number("--rms-norm-eps", c.rms_norm_eps);
  auto boolean = [&](const char* name, bool& value) {
    if (!a.has(name)) return;
    const std::string v = a.str(name);
    if (v != "true" && v != "false") throw UsageError(std::string(name) + " must be true or false");
    value = v == "true";
  };
  boolean("--tie-word-embeddings", c.tie_word_embeddings);
  if (c.model_type != "qwen2") {  // mlp_bias: llama and mistral
    boolean("--attention-bias", c.o_bias);
    c.qkv_bias = c.o_bias;
    boolean("--mlp-bias", c.mlp_bias);
  } else if (a.has("--attention-bias") || a.has("--mlp-bias")) {
    throw UsageError("--attention-bias and --mlp-bias are for llama, mistral and qwen3 presets", "",
                     "qwen2 has its q/k/v biases always");
  }
  if (a.has("--head-dim")) c.head_dim_override = positive_int(a, "--head-dim", 0);
  if (a.has("--sliding-window")) {
    if (c.model_type != "mistral")
      throw UsageError("--sliding-window is for mistral presets", "",
                       "Qwen's per-layer windows are not built");
    const long long w = a.integer("--sliding-window", 0);
    if (w < 0 || w > (1 << 30))
      throw UsageError("--sliding-window must be 0 or a positive integer");
    c.sliding_window = static_cast<int>(w);
  }
  try {
    c.validate("the requested shape");
  } catch (const Error& e) {
    throw UsageError(e.what());
  }
  const std::string dtype = a.str("--dtype", "f32");
  if (dtype != "f32" && dtype != "bf16") throw UsageError("--dtype must be f32 or bf16");
  const long long seed = a.integer("--seed", 0);
  set_num_threads(static_cast<int>(a.integer("--threads", 0)));

  if (!a.has("--tokenizer") && c.vocab_size < kByteLevelVocab)
    throw UsageError("vocab_size " + std::to_string(c.vocab_size) +
                         " is too small for the built-in byte-level tokenizer (needs " +
                         std::to_string(kByteLevelVocab) + ")",
                     "", "raise --vocab-size or pass --tokenizer DIR");
  // The tokenizer source is checked before anything is written.
  std::vector<std::string> tok_files;
  if (a.has("--tokenizer")) {
    tok_files = tokenizer_files(a.str("--tokenizer"));
    if (tok_files.empty())
      throw Error("no tokenizer files found", a.str("--tokenizer"),
                  "expected tokenizer.json or vocab.json + merges.txt");
    // The config's special ids follow the tokenizer where it names them, as in real folders.
    const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(a.str("--tokenizer"));
    if (tok.vocab_size() > c.vocab_size)
      throw UsageError("the tokenizer has " + std::to_string(tok.vocab_size()) +
                           " tokens, more than vocab_size " + std::to_string(c.vocab_size),
                       "", "raise --vocab-size");
    if (tok.bos_id() >= 0) c.bos_token_id = tok.bos_id();
    if (tok.eos_id() >= 0) c.eos_token_ids = c.generation.eos_token_ids = {tok.eos_id()};
  }
  const InitScheme scheme = parse_init_scheme(a.str("--init", "scaled"));
  write_random_model(out, c, static_cast<uint64_t>(seed), dtype == "f32" ? DType::F32 : DType::BF16,
                     scheme);
  if (a.has("--tokenizer"))
    copy_files(a.str("--tokenizer"), out, tok_files);
  else
    tokenizer::write_byte_level_tokenizer(out);
  const int64_t params = model_parameter_count(c);
  std::printf("wrote %s: %lld parameters, %d layers, hidden %d, dtype %s\n", out.c_str(),
              static_cast<long long>(params), c.num_hidden_layers, c.hidden_size, dtype.c_str());
  return 0;
}

}  // namespace loratune::cli
