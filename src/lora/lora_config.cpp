#include "lora/lora_config.h"

#include <cmath>
#include <regex>

#include "core/error.h"

namespace loratune {

namespace {

const char* const kNames[kNumLoraModules] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                             "gate_proj", "up_proj", "down_proj"};

// A key that must be absent, null, false or empty for loratune to honour the adapter.
void refuse_if_set(const Json& j, const char* key, const std::string& path, const char* what) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return;
  if ((it->is_boolean() && !it->get<bool>()) || (it->is_object() && it->empty()) ||
      (it->is_array() && it->empty()))
    return;
  throw Error(
      std::string("adapter uses ") + what + " (" + key + "), which loratune does not support", path,
      "train a plain LoRA adapter");
}

}  // namespace

const char* lora_module_name(LoraModule m) {
  return kNames[static_cast<int>(m)];
}

std::string lora_module_path(LoraModule m) {
  return (static_cast<int>(m) <= static_cast<int>(LoraModule::kO) ? "self_attn." : "mlp.") +
         std::string(lora_module_name(m));
}

float LoraConfig::scale() const {
  return static_cast<float>(use_rslora ? lora_alpha / std::sqrt(static_cast<double>(r))
                                       : lora_alpha / r);
}

bool LoraConfig::targets(int layer, LoraModule m) const {
  if (!target_regex.empty()) {
    const std::string full = "model.layers." + std::to_string(layer) + "." + lora_module_path(m);
    return std::regex_match(full, std::regex(target_regex));
  }
  for (const std::string& t : target_modules)
    if (t == "all-linear" || t == lora_module_name(m)) return true;
  return false;
}

void LoraConfig::validate() const {
  if (r <= 0) throw UsageError("--lora-r must be positive");
  if (!(lora_alpha > 0)) throw UsageError("--lora-alpha must be positive");
  if (!(lora_dropout >= 0 && lora_dropout < 1))
    throw UsageError("--lora-dropout must be in [0, 1)");
  if (target_modules.empty() && target_regex.empty())
    throw UsageError("no target modules", "", "use e.g. --target-modules q_proj,v_proj");
  for (const std::string& t : target_modules) {
    bool known = t == "all-linear";
    for (const char* n : kNames) known = known || t == n;
    if (!known)
      throw UsageError(
          "unknown target module '" + t + "'", "",
          "use q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj or all-linear");
  }
}

std::vector<std::string> parse_target_modules(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    if (!item.empty()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

LoraConfig read_lora_config(const std::string& path) {
  Json j = read_json_file(path);
  if (!j.is_object()) throw Error("adapter config is not a JSON object", path);
  auto peft_type = j.find("peft_type");
  if (peft_type != j.end() && (!peft_type->is_string() || peft_type->get<std::string>() != "LORA"))
    throw Error("peft_type " + peft_type->dump() + " is not LORA", path,
                "loratune loads LoRA adapters");
  refuse_if_set(j, "use_dora", path, "DoRA");
  refuse_if_set(j, "fan_in_fan_out", path, "transposed (fan_in_fan_out) weights");
  refuse_if_set(j, "rank_pattern", path, "per-module ranks");
  refuse_if_set(j, "alpha_pattern", path, "per-module alphas");
  refuse_if_set(j, "layers_to_transform", path, "a layer subset");
  refuse_if_set(j, "modules_to_save", path, "fully trained extra modules");
  refuse_if_set(j, "layer_replication", path, "layer replication");
  if (auto b = j.find("bias"); b != j.end() && !(b->is_string() && b->get<std::string>() == "none"))
    throw Error("adapter trains biases (bias " + b->dump() + ")", path,
                "only bias \"none\" is supported");

  LoraConfig c;
  try {
    c.r = j.at("r").get<int>();
    c.lora_alpha = j.value("lora_alpha", static_cast<double>(c.r));
    c.lora_dropout = j.value("lora_dropout", 0.0);
    c.use_rslora = j.value("use_rslora", false);
    c.base_model_name_or_path =
        j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()
            ? j["base_model_name_or_path"].get<std::string>()
            : "";
    const Json& t = j.at("target_modules");
    c.target_modules.clear();
    if (t.is_string()) {
      if (t.get<std::string>() == "all-linear")
        c.target_modules = {"all-linear"};
      else
        c.target_regex = t.get<std::string>();
    } else {
      for (const auto& m : t) c.target_modules.push_back(m.get<std::string>());
    }
  } catch (const Json::exception& e) {
    throw Error(std::string("bad adapter config: ") + e.what(), path);
  }
  if (!c.target_regex.empty()) {
    try {
      std::regex re(c.target_regex);
    } catch (const std::regex_error&) {
      throw Error("target_modules regex '" + c.target_regex + "' is invalid", path);
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    throw Error(e.what(), path);
  }
  return c;
}

Json lora_config_to_json(const LoraConfig& c, bool inference_mode) {
  Json targets = c.target_regex.empty() ? Json(c.target_modules) : Json(c.target_regex);
  if (c.target_regex.empty() && c.target_modules.size() == 1 && c.target_modules[0] == "all-linear")
    targets = "all-linear";
  return Json{
      {"alpha_pattern", Json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", c.base_model_name_or_path},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", inference_mode},
      {"init_lora_weights", true},
      {"layer_replication", nullptr},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"loftq_config", Json::object()},
      {"lora_alpha", c.lora_alpha == std::floor(c.lora_alpha)
                         ? Json(static_cast<long long>(c.lora_alpha))
                         : Json(c.lora_alpha)},
      {"lora_dropout", c.lora_dropout},
      {"megatron_config", nullptr},
      {"megatron_core", "megatron.core"},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", c.r},
      {"rank_pattern", Json::object()},
      {"revision", nullptr},
      {"target_modules", targets},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", false},
      {"use_rslora", c.use_rslora},
  };
}

}  // namespace loratune
