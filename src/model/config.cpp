#include "model/config.h"

#include <cmath>
#include <numbers>

#include "core/error.h"
#include "io/gguf.h"
#include "model/gguf_model.h"
#include "ops/ops.h"

namespace loratune {

namespace {

int get_int(const Json& j, const char* key, const std::string& source, int fallback,
            bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) throw Error(std::string("missing key '") + key + "'", source);
    return fallback;
  }
  if (!it->is_number_integer() || it->get<long long>() < 0 || it->get<long long>() > (1ll << 30))
    throw Error(std::string("key '") + key + "' must be a non-negative integer", source);
  return it->get<int>();
}

double get_double(const Json& j, const char* key, const std::string& source, double fallback) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return fallback;
  if (!it->is_number()) throw Error(std::string("key '") + key + "' must be a number", source);
  return it->get<double>();
}

// eos_token_id may be a single integer or a list of them.
std::vector<int> get_ids(const Json& j, const char* key, const std::string& source) {
  std::vector<int> ids;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return ids;
  if (it->is_number_integer()) return {it->get<int>()};
  if (!it->is_array())
    throw Error(std::string("key '") + key + "' must be an id or a list", source);
  for (const auto& v : *it) {
    if (!v.is_number_integer())
      throw Error(std::string("key '") + key + "' holds a non-id", source);
    ids.push_back(v.get<int>());
  }
  return ids;
}

bool get_bool(const Json& j, const char* key, const std::string& source) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return false;
  if (!it->is_boolean())
    throw Error(std::string("key '") + key + "' must be true or false", source);
  return it->get<bool>();
}

// config.json's rope_scaling: {"rope_type" (or "type"): "linear" | "llama3", "factor", ...}.
RopeScaling parse_rope_scaling(const Json& j, const std::string& source) {
  if (!j.is_object()) throw Error("rope_scaling must be an object", source);
  RopeScaling s;
  for (const char* key : {"rope_type", "type"})
    if (auto it = j.find(key); it != j.end() && it->is_string()) s.type = it->get<std::string>();
  if (s.type == "default") return {};
  if (s.type != "linear" && s.type != "llama3")
    throw Error("unsupported rope_scaling type '" + s.type + "'", source,
                "loratune applies linear and llama3 RoPE scaling");
  s.factor = get_double(j, "factor", source, 1.0);
  if (!(s.factor >= 1.0)) throw Error("rope_scaling factor must be at least 1", source);
  if (s.type == "llama3") {
    s.low_freq_factor = get_double(j, "low_freq_factor", source, 1.0);
    s.high_freq_factor = get_double(j, "high_freq_factor", source, 4.0);
    s.original_max_position_embeddings =
        get_int(j, "original_max_position_embeddings", source, 8192, false);
    if (!(s.high_freq_factor > s.low_freq_factor) || !(s.low_freq_factor > 0) ||
        s.original_max_position_embeddings <= 0)
      throw Error(
          "rope_scaling llama3 needs 0 < low_freq_factor < high_freq_factor and a "
          "positive original_max_position_embeddings",
          source);
  }
  return s;
}

}  // namespace

void ModelConfig::validate(const std::string& source) const {
  auto positive = [&](int v, const char* name) {
    if (v <= 0) throw Error(std::string(name) + " must be positive", source);
  };
  positive(hidden_size, "hidden_size");
  positive(intermediate_size, "intermediate_size");
  positive(num_hidden_layers, "num_hidden_layers");
  positive(num_attention_heads, "num_attention_heads");
  positive(num_key_value_heads, "num_key_value_heads");
  positive(vocab_size, "vocab_size");
  if (head_dim_override == 0 && hidden_size % num_attention_heads != 0)
    throw Error("hidden_size is not a multiple of num_attention_heads", source);
  if (head_dim() % 2 != 0) throw Error("head dimension must be even for RoPE", source);
  if (num_attention_heads % num_key_value_heads != 0)
    throw Error("num_attention_heads is not a multiple of num_key_value_heads", source);
  if (!(rms_norm_eps > 0) || !(rope_theta > 0))
    throw Error("rms_norm_eps and rope_theta must be positive", source);
}

ModelConfig parse_model_config(const Json& j, const std::string& source) {
  if (!j.is_object()) throw Error("config is not a JSON object", source);
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string())
    throw Error("missing model_type", source,
                "loratune runs model_type qwen2 (Qwen2, Qwen2.5), qwen3, llama and mistral");
  const std::string type = mt->get<std::string>();
  if (type != "qwen2" && type != "qwen3" && type != "llama" && type != "mistral")
    throw Error("unsupported model_type '" + type + "'", source,
                "loratune runs model_type qwen2 (Qwen2, Qwen2.5), qwen3, llama and mistral");
  ModelConfig c;
  c.hidden_size = get_int(j, "hidden_size", source, 0, true);
  c.intermediate_size = get_int(j, "intermediate_size", source, 0, true);
  c.num_hidden_layers = get_int(j, "num_hidden_layers", source, 0, true);
  c.num_attention_heads = get_int(j, "num_attention_heads", source, 0, true);
  c.num_key_value_heads = get_int(j, "num_key_value_heads", source, c.num_attention_heads, false);
  c.vocab_size = get_int(j, "vocab_size", source, 0, true);
  c.max_position_embeddings = get_int(j, "max_position_embeddings", source, 32768, false);
  c.rope_theta = get_double(j, "rope_theta", source, 10000.0);
  c.rms_norm_eps = get_double(j, "rms_norm_eps", source, 1e-6);
  if (auto it = j.find("tie_word_embeddings"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) throw Error("tie_word_embeddings must be true or false", source);
    c.tie_word_embeddings = it->get<bool>();
  }
  if (auto it = j.find("torch_dtype"); it != j.end() && it->is_string())
    c.torch_dtype = it->get<std::string>();
  c.bos_token_id = get_int(j, "bos_token_id", source, -1, false);
  c.eos_token_ids = get_ids(j, "eos_token_id", source);
  c.model_type = type;
  if (type != "qwen2") {
    c.qkv_bias = c.o_bias = get_bool(j, "attention_bias", source);
    if (type != "qwen3") c.mlp_bias = get_bool(j, "mlp_bias", source);
  }
  c.qk_norm = type == "qwen3";
  c.head_dim_override = get_int(j, "head_dim", source, 0, false);
  if (auto it = j.find("rope_scaling"); it != j.end() && !it->is_null())
    c.rope_scaling = parse_rope_scaling(*it, source);
  if (type == "mistral") c.sliding_window = get_int(j, "sliding_window", source, 0, false);
  if ((type == "qwen2" || type == "qwen3") && get_bool(j, "use_sliding_window", source))
    throw Error("use_sliding_window is not supported", source,
                "sliding windows are built for Mistral; Qwen's per-layer windows "
                "(max_window_layers) are not");
  c.validate(source);
  return c;
}

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int D = c.head_dim();
  std::vector<float> f(D / 2);
  ops::rope_inv_freq(f.data(), D, c.rope_theta);
  const RopeScaling& s = c.rope_scaling;
  const float factor = static_cast<float>(s.factor);
  if (s.type == "linear") {
    for (float& x : f) x /= factor;
  } else if (s.type == "llama3") {
    const float old_len = static_cast<float>(s.original_max_position_embeddings);
    const float low = static_cast<float>(s.low_freq_factor);
    const float high = static_cast<float>(s.high_freq_factor);
    const float low_wavelen = old_len / low, high_wavelen = old_len / high;
    for (float& x : f) {
      const float wavelen = 2.0f * std::numbers::pi_v<float> / x;
      const float scaled = wavelen > low_wavelen ? x / factor : x;
      if (wavelen >= high_wavelen && wavelen <= low_wavelen) {  // between: blended
        const float smooth = (old_len / wavelen - low) / (high - low);
        x = (1.0f - smooth) * scaled / factor + smooth * scaled;
      } else {
        x = scaled;
      }
    }
  }
  return f;
}

ModelConfig load_model_config(const std::string& dir) {
  if (is_gguf_file(dir)) return config_from_gguf(GgufFile(dir).image(), dir);
  if (!dir_exists(dir)) throw Error("model folder not found", dir, "check the --model path");
  const std::string path = dir + "/config.json";
  if (!file_exists(path))
    throw Error("no config.json in the model folder", dir,
                "point --model at a Hugging Face model folder");
  ModelConfig c = parse_model_config(read_json_file(path), path);
  c.generation.eos_token_ids = c.eos_token_ids;
  const std::string gen_path = dir + "/generation_config.json";
  if (file_exists(gen_path)) {
    Json g = read_json_file(gen_path);
    if (!g.is_object()) throw Error("generation config is not a JSON object", gen_path);
    GenerationConfig& gc = c.generation;
    if (auto it = g.find("do_sample"); it != g.end() && it->is_boolean())
      gc.do_sample = it->get<bool>();
    gc.temperature = get_double(g, "temperature", gen_path, gc.temperature);
    gc.top_k = get_int(g, "top_k", gen_path, gc.top_k, false);
    gc.top_p = get_double(g, "top_p", gen_path, gc.top_p);
    gc.repetition_penalty = get_double(g, "repetition_penalty", gen_path, gc.repetition_penalty);
    std::vector<int> eos = get_ids(g, "eos_token_id", gen_path);
    if (!eos.empty()) gc.eos_token_ids = eos;
  }
  return c;
}

Json model_config_to_json(const ModelConfig& c) {
  const char* architecture = c.model_type == "llama"     ? "LlamaForCausalLM"
                             : c.model_type == "mistral" ? "MistralForCausalLM"
                             : c.model_type == "qwen3"   ? "Qwen3ForCausalLM"
                                                         : "Qwen2ForCausalLM";
  Json j = {
      {"architectures", {architecture}},
      {"model_type", c.model_type},
      {"hidden_act", "silu"},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"max_window_layers", c.num_hidden_layers},
      {"sliding_window", c.max_position_embeddings},
      {"use_sliding_window", false},
      {"rope_theta", c.rope_theta},
      {"rms_norm_eps", c.rms_norm_eps},
      {"initializer_range", 0.02},
      {"attention_dropout", 0.0},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"torch_dtype", c.torch_dtype},
      {"use_cache", true},
  };
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (c.eos_token_ids.size() == 1)
    j["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty())
    j["eos_token_id"] = c.eos_token_ids;
  if (c.model_type == "llama" || c.model_type == "mistral") {
    j.erase("max_window_layers");
    j.erase("use_sliding_window");
    j["mlp_bias"] = c.mlp_bias;
    j["sliding_window"] = c.sliding_window > 0 ? Json(c.sliding_window) : Json();
    if (c.model_type == "llama") j.erase("sliding_window");
  }
  if (c.model_type != "qwen2") j["attention_bias"] = c.o_bias;
  if (c.head_dim_override > 0) j["head_dim"] = c.head_dim_override;
  if (!c.rope_scaling.type.empty()) {
    const RopeScaling& s = c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", s.type}, {"factor", s.factor}};
    if (s.type == "llama3") {
      j["rope_scaling"]["low_freq_factor"] = s.low_freq_factor;
      j["rope_scaling"]["high_freq_factor"] = s.high_freq_factor;
      j["rope_scaling"]["original_max_position_embeddings"] = s.original_max_position_embeddings;
    }
  }
  return j;
}

Json generation_config_to_json(const ModelConfig& c) {
  Json j = {{"do_sample", c.generation.do_sample}, {"max_new_tokens", 2048}};
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  const auto& eos = c.generation.eos_token_ids;
  if (eos.size() == 1)
    j["eos_token_id"] = eos[0];
  else if (!eos.empty())
    j["eos_token_id"] = eos;
  return j;
}

}  // namespace loratune
