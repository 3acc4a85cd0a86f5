#include "lora/adapter.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/half.h"
#include "core/rng.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "model/init_model.h"

namespace loratune {

void lora_module_dims(const ModelConfig& m, LoraModule module, int* in, int* out) {
  const int C = m.hidden_size, F = m.intermediate_size;
  const int QD = m.num_attention_heads * m.head_dim(), KVD = m.kv_dim();
  switch (module) {
    case LoraModule::kQ:
      *in = C, *out = QD;
      break;
    case LoraModule::kK:
    case LoraModule::kV:
      *in = C, *out = KVD;
      break;
    case LoraModule::kO:
      *in = QD, *out = C;
      break;
    case LoraModule::kGate:
    case LoraModule::kUp:
      *in = C, *out = F;
      break;
    case LoraModule::kDown:
      *in = F, *out = C;
      break;
  }
}

std::string LoraAdapter::tensor_name(int layer, LoraModule m, char which) {
  return "base_model.model.model.layers." + std::to_string(layer) + "." + lora_module_path(m) +
         ".lora_" + which + ".weight";
}

LoraAdapter::LoraAdapter(const ModelConfig& model, const LoraConfig& config, uint64_t seed,
                         double b_std)
    : config_(config) {
  config_.validate();
  Rng rng(seed);
  modules_.resize(model.num_hidden_layers);
  for (int l = 0; l < model.num_hidden_layers; ++l)
    for (int i = 0; i < kNumLoraModules; ++i) {
      const auto m = static_cast<LoraModule>(i);
      if (!config_.targets(l, m)) continue;
      auto w = std::make_unique<LoraWeights>();
      lora_module_dims(model, m, &w->in, &w->out);
      w->r = config_.r;
      w->A.resize(static_cast<size_t>(w->r) * w->in);
      w->B.assign(static_cast<size_t>(w->out) * w->r, 0.0f);
      const double bound = 1.0 / std::sqrt(static_cast<double>(w->in));
      for (float& a : w->A) a = static_cast<float>((2.0 * rng.uniform() - 1.0) * bound);
      if (b_std > 0)
        for (float& b : w->B) b = static_cast<float>(rng.normal() * b_std);
      w->dA.assign(w->A.size(), 0.0f);
      w->dB.assign(w->B.size(), 0.0f);
      modules_[l][i] = std::move(w);
    }
}

LoraAdapter LoraAdapter::load(const std::string& dir, const ModelConfig& model) {
  const std::string config_path = dir + "/adapter_config.json";
  if (!file_exists(config_path))
    throw Error("no adapter_config.json in the adapter folder", dir,
                "point --adapter at a PEFT adapter folder");
  LoraAdapter adapter(read_lora_config(config_path));
  const std::string weights_path = dir + "/adapter_model.safetensors";
  SafetensorsFile file(weights_path);
  adapter.modules_.resize(model.num_hidden_layers);
  size_t used = 0;
  for (int l = 0; l < model.num_hidden_layers; ++l)
    for (int i = 0; i < kNumLoraModules; ++i) {
      const auto m = static_cast<LoraModule>(i);
      const TensorInfo* a = file.find(tensor_name(l, m, 'A'));
      const TensorInfo* b = file.find(tensor_name(l, m, 'B'));
      if (!a && !b) {
        if (adapter.config_.targets(l, m))
          throw Error("missing tensor '" + tensor_name(l, m, 'A') + "'", weights_path,
                      "the adapter does not match its adapter_config.json target_modules");
        continue;
      }
      if (!a || !b)
        throw Error("lora_A and lora_B must come in pairs",
                    weights_path + ", layer " + std::to_string(l));
      auto w = std::make_unique<LoraWeights>();
      lora_module_dims(model, m, &w->in, &w->out);
      w->r = adapter.config_.r;
      const std::vector<int64_t> want_a = {w->r, w->in}, want_b = {w->out, w->r};
      for (auto [t, want] : {std::pair{a, want_a}, std::pair{b, want_b}}) {
        if (t->shape != want)
          throw Error("tensor '" + t->name + "' has shape [" +
                          std::to_string(t->shape.size() > 0 ? t->shape[0] : 0) + ", " +
                          std::to_string(t->shape.size() > 1 ? t->shape[1] : 0) +
                          "] but this model needs [" + std::to_string(want[0]) + ", " +
                          std::to_string(want[1]) + "]",
                      weights_path, "the adapter was trained for another model shape");
        if (t->dtype != DType::F32 && t->dtype != DType::BF16 && t->dtype != DType::F16)
          throw Error(std::string("tensor '") + t->name + "' has dtype " + dtype_name(t->dtype),
                      weights_path);
      }
      auto read = [](const TensorInfo* t, std::vector<float>& out) {
        out.resize(t->numel());
        if (t->dtype == DType::F32) {
          std::memcpy(out.data(), t->data, t->nbytes);
        } else {
          for (size_t k = 0; k < out.size(); ++k) {
            uint16_t h;
            std::memcpy(&h, t->data + 2 * k, 2);
            out[k] = t->dtype == DType::BF16 ? bf16_to_float(h) : f16_to_float(h);
          }
        }
      };
      read(a, w->A);
      read(b, w->B);
      w->dA.assign(w->A.size(), 0.0f);
      w->dB.assign(w->B.size(), 0.0f);
      adapter.modules_[l][i] = std::move(w);
      used += 2;
    }
  if (used == 0) throw Error("adapter holds no LoRA tensors for this model", weights_path);
  if (used != file.tensors().size())
    for (const auto& [name, t] : file.tensors()) {
      bool known = false;
      for (int l = 0; l < model.num_hidden_layers && !known; ++l)
        for (int i = 0; i < kNumLoraModules && !known; ++i)
          known = name == tensor_name(l, static_cast<LoraModule>(i), 'A') ||
                  name == tensor_name(l, static_cast<LoraModule>(i), 'B');
      if (!known)
        throw Error("tensor '" + name + "' does not belong to a LoRA layer of this model",
                    weights_path, "the adapter was trained for another model");
    }
  return adapter;
}

void LoraAdapter::save(const std::string& dir) const {
  make_dirs(dir);
  std::vector<TensorToWrite> tensors;
  for (size_t l = 0; l < modules_.size(); ++l)
    for (int i = 0; i < kNumLoraModules; ++i) {
      const LoraWeights* w = modules_[l][i].get();
      if (!w) continue;
      const auto m = static_cast<LoraModule>(i);
      tensors.push_back(
          {tensor_name(static_cast<int>(l), m, 'A'), DType::F32, {w->r, w->in}, w->A.data()});
      tensors.push_back(
          {tensor_name(static_cast<int>(l), m, 'B'), DType::F32, {w->out, w->r}, w->B.data()});
    }
  std::sort(tensors.begin(), tensors.end(),
            [](const TensorToWrite& a, const TensorToWrite& b) { return a.name < b.name; });
  write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_file_atomic(dir + "/adapter_config.json",
                    lora_config_to_json(config_, true).dump(2) + "\n");
}

std::vector<LoraParam> LoraAdapter::parameters() {
  std::vector<LoraParam> params;
  for (size_t l = 0; l < modules_.size(); ++l)
    for (int i = 0; i < kNumLoraModules; ++i) {
      LoraWeights* w = modules_[l][i].get();
      if (!w) continue;
      const auto m = static_cast<LoraModule>(i);
      params.push_back({tensor_name(static_cast<int>(l), m, 'A'),
                        w->A.data(),
                        w->dA.data(),
                        w->A.size(),
                        {w->r, w->in}});
      params.push_back({tensor_name(static_cast<int>(l), m, 'B'),
                        w->B.data(),
                        w->dB.data(),
                        w->B.size(),
                        {w->out, w->r}});
    }
  return params;
}

void LoraAdapter::zero_grad() {
  for (auto& layer : modules_)
    for (auto& w : layer)
      if (w) {
        std::fill(w->dA.begin(), w->dA.end(), 0.0f);
        std::fill(w->dB.begin(), w->dB.end(), 0.0f);
      }
}

}  // namespace loratune
