#include "train/checkpoint.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

namespace loratune {

Json trainer_state_to_json(const TrainerState& s) {
  return Json{{"global_step", s.global_step},
              {"epoch", s.epoch},
              {"max_steps", s.max_steps},
              {"best_metric", s.best_metric ? Json(*s.best_metric) : Json(nullptr)},
              {"best_model_checkpoint",
               s.best_model_checkpoint.empty() ? Json(nullptr) : Json(s.best_model_checkpoint)},
              {"log_history", s.log_history},
              {"seed", s.seed}};
}

TrainerState trainer_state_from_json(const Json& j, const std::string& source) {
  TrainerState s;
  try {
    s.global_step = j.at("global_step").get<int64_t>();
    s.epoch = j.at("epoch").get<double>();
    s.max_steps = j.value("max_steps", int64_t{0});
    if (j.contains("best_metric") && !j["best_metric"].is_null())
      s.best_metric = j["best_metric"].get<double>();
    if (j.contains("best_model_checkpoint") && j["best_model_checkpoint"].is_string())
      s.best_model_checkpoint = j["best_model_checkpoint"].get<std::string>();
    s.log_history = j.value("log_history", Json::array());
    s.seed = j.value("seed", uint64_t{0});
  } catch (const Json::exception& e) {
    throw Error(std::string("bad trainer state: ") + e.what(), source);
  }
  return s;
}

std::string checkpoint_dir(const std::string& output_dir, int64_t step) {
  return output_dir + "/checkpoint-" + std::to_string(step);
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

std::string save_checkpoint(const std::string& output_dir, LoraAdapter& adapter, AdamW& optimizer,
                            const TrainerState& state, double lr, const Json& training_args) {
  const std::string final_dir = checkpoint_dir(output_dir, state.global_step);
  const std::string tmp = output_dir + "/.checkpoint-" + std::to_string(state.global_step) + ".tmp";
  remove_tree(tmp);
  try {
    adapter.save(tmp);
    std::vector<TensorToWrite> moments;
    std::vector<LoraParam> params = adapter.parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      moments.push_back(
          {params[i].name + ".exp_avg", DType::F32, params[i].shape, optimizer.exp_avg(i).data()});
      moments.push_back({params[i].name + ".exp_avg_sq", DType::F32, params[i].shape,
                         optimizer.exp_avg_sq(i).data()});
    }
    write_safetensors(tmp + "/optimizer.safetensors", moments,
                      {{"format", "pt"}, {"step", std::to_string(optimizer.step_count())}});
    write_file_atomic(tmp + "/scheduler.json",
                      Json{{"last_step", state.global_step}, {"last_lr", lr}}.dump(2) + "\n");
    // Every random choice derives from the seed, the epoch and the step, so the seed and the
    // step are the whole RNG state; the data position is (epoch, step within the epoch).
    write_file_atomic(
        tmp + "/rng_state.json",
        Json{{"seed", state.seed}, {"global_step", state.global_step}}.dump(2) + "\n");
    write_file_atomic(tmp + "/trainer_state.json", trainer_state_to_json(state).dump(2) + "\n");
    write_file_atomic(tmp + "/training_args.json", training_args.dump(2) + "\n");
    remove_tree(final_dir);
    if (std::rename(tmp.c_str(), final_dir.c_str()) != 0)
      throw Error(std::string("cannot rename checkpoint: ") + std::strerror(errno), final_dir);
  } catch (...) {
    remove_tree(tmp);
    throw;
  }
  return final_dir;
}

TrainerState load_checkpoint(const std::string& dir, LoraAdapter& adapter, AdamW& optimizer) {
  if (!dir_exists(dir)) throw Error("checkpoint folder not found", dir);
  TrainerState state = trainer_state_from_json(read_json_file(dir + "/trainer_state.json"),
                                               dir + "/trainer_state.json");
  // Adapter weights: same names and shapes as the adapter being trained.
  SafetensorsFile weights(dir + "/adapter_model.safetensors");
  SafetensorsFile moments(dir + "/optimizer.safetensors");
  std::vector<LoraParam> params = adapter.parameters();
  auto copy = [&](const SafetensorsFile& f, const std::string& name, float* out, size_t n) {
    const TensorInfo* t = f.find(name);
    if (!t || t->dtype != DType::F32 || static_cast<size_t>(t->numel()) != n)
      throw Error("checkpoint tensor '" + name + "' is missing or has another shape", f.path(),
                  "resume with the same LoRA settings the checkpoint was trained with");
    std::memcpy(out, t->data, n * sizeof(float));
  };
  for (size_t i = 0; i < params.size(); ++i) {
    copy(weights, params[i].name, params[i].value, params[i].size);
    copy(moments, params[i].name + ".exp_avg", optimizer.exp_avg(i).data(), params[i].size);
    copy(moments, params[i].name + ".exp_avg_sq", optimizer.exp_avg_sq(i).data(), params[i].size);
  }
  auto step = moments.metadata().find("step");
  if (step == moments.metadata().end()) throw Error("optimizer state has no step", moments.path());
  optimizer.set_step_count(std::stoll(step->second));
  return state;
}

std::vector<std::pair<int64_t, std::string>> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  DIR* d = ::opendir(output_dir.c_str());
  if (!d) return out;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.rfind("checkpoint-", 0) != 0) continue;
    const std::string num = name.substr(11);
    if (num.empty() || num.find_first_not_of("0123456789") != std::string::npos) continue;
    out.emplace_back(std::stoll(num), output_dir + "/" + name);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return out;
}

void rotate_checkpoints(const std::string& output_dir, int limit, const std::string& keep) {
  if (limit <= 0) return;
  auto all = list_checkpoints(output_dir);
  int excess = static_cast<int>(all.size()) - limit;
  for (const auto& [step, path] : all) {
    if (excess <= 0) break;
    if (path == keep) continue;
    remove_tree(path);
    --excess;
  }
}

}  // namespace loratune
