// PEFT adapter files and the debug commands built on them.
#include <cmath>
#include <cstring>

#include "io/safetensors.h"
#include "lora/adapter.h"
#include "model/config.h"
#include "test_util.h"

namespace loratune {
namespace {

using test::run_cli;

std::string ids_arg(const SafetensorsFile& g, const char* prefix) {
  std::string out;
  for (int i = 0; g.find(prefix + std::to_string(i)); ++i) {
    const TensorInfo& t = *g.find(prefix + std::to_string(i));
    if (i) out += ";";
    for (int64_t j = 0; j < t.numel(); ++j) {
      int v;
      std::memcpy(&v, t.data + 4 * j, 4);
      out += (j ? "," : "") + std::to_string(v);
    }
  }
  return "'" + out + "'";
}

TEST(AdapterCli, DebugGradsMatchesGolden) {
  test::TempDir dir;
  SafetensorsFile g(test::golden("grads_tiny_all.safetensors"));
  test::CommandResult r =
      run_cli("debug grads --model '" + test::golden("models/tiny") + "' --adapter '" +
              test::golden("adapters/tiny_all") + "' --ids " + ids_arg(g, "ids.") + " --labels " +
              ids_arg(g, "labels.") + " --out '" + dir / "g.safetensors" + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  SafetensorsFile out(dir / "g.safetensors");
  EXPECT_NEAR(*reinterpret_cast<const float*>(out.find("loss")->data),
              *reinterpret_cast<const float*>(g.find("loss")->data), 1e-5);
  int compared = 0;
  for (const auto& [name, t] : out.tensors()) {
    if (name == "loss") continue;
    const TensorInfo* ref = g.find(name);
    ASSERT_NE(ref, nullptr) << name;
    const float* a = reinterpret_cast<const float*>(t.data);
    const float* b = reinterpret_cast<const float*>(ref->data);
    double diff = 0, scale = 0;
    for (int64_t i = 0; i < t.numel(); ++i) {
      diff = std::max(diff, std::fabs(double(a[i]) - b[i]));
      scale = std::max(scale, std::fabs(double(b[i])));
    }
    EXPECT_LE(diff, 1e-4 * scale) << name;
    ++compared;
  }
  EXPECT_EQ(compared, 28);
}

TEST(AdapterCli, DebugLogitsWithAdapterMatchesGolden) {
  test::TempDir dir;
  SafetensorsFile g(test::golden("logits_tiny_adapter_all_batch.safetensors"));
  test::CommandResult r = run_cli("debug logits --model '" + test::golden("models/tiny") +
                                  "' --adapter '" + test::golden("adapters/tiny_all") + "' --ids " +
                                  ids_arg(g, "ids.") + " --out '" + dir / "l.safetensors" + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  SafetensorsFile out(dir / "l.safetensors");
  const float* got = reinterpret_cast<const float*>(out.find("logits")->data);
  int64_t row = 0;
  for (int i = 0; g.find("logits." + std::to_string(i)); ++i) {
    const TensorInfo& ref = *g.find("logits." + std::to_string(i));
    const float* want = reinterpret_cast<const float*>(ref.data);
    for (int64_t j = 0; j < ref.numel(); ++j) ASSERT_NEAR(got[row + j], want[j], 1e-4f);
    row += ref.numel();
  }
  EXPECT_EQ(row, out.find("logits")->numel());
}

TEST(AdapterFiles, InitSaveLoadRoundTrip) {
  test::TempDir dir;
  ASSERT_EQ(run_cli("debug init-adapter --model '" + test::golden("models/tiny") + "' --out '" +
                    dir / "a" + "' --lora-r 4 --target-modules all-linear --b-std 0.01 --seed 3")
                .status,
            0);
  ModelConfig mc = load_model_config(test::golden("models/tiny"));
  LoraAdapter a = LoraAdapter::load(dir / "a", mc);
  EXPECT_EQ(a.parameters().size(), 2u * 7 * mc.num_hidden_layers);
  a.save(dir / "b");
  EXPECT_EQ(test::read_file(dir / "a/adapter_model.safetensors"),
            test::read_file(dir / "b/adapter_model.safetensors"));
  Json config = read_json_file(dir / "a/adapter_config.json");
  EXPECT_EQ(config["peft_type"], "LORA");
  EXPECT_EQ(config["task_type"], "CAUSAL_LM");
  EXPECT_EQ(config["target_modules"], "all-linear");
  EXPECT_EQ(config["r"], 4);
  SafetensorsFile f(dir / "a/adapter_model.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const TensorInfo* A = f.find("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
  ASSERT_NE(A, nullptr);
  EXPECT_EQ(A->shape, (std::vector<int64_t>{4, mc.intermediate_size}));
  EXPECT_EQ(A->dtype, DType::F32);
  // Fresh PEFT init: A within ±1/sqrt(in), B zero.
  LoraAdapter fresh(mc, LoraConfig{}, 1);
  for (const LoraParam& p : fresh.parameters()) {
    const bool is_a = p.name.find("lora_A") != std::string::npos;
    const float bound = 1.0f / std::sqrt(static_cast<float>(p.shape[1]));
    for (size_t i = 0; i < p.size; ++i) {
      if (is_a)
        ASSERT_LE(std::fabs(p.value[i]), bound);
      else
        ASSERT_EQ(p.value[i], 0.0f);
    }
  }
}

TEST(AdapterFiles, RefusesWhatItCannotHonour) {
  test::TempDir dir;
  const std::string tiny = test::golden("models/tiny");
  auto logits = [&](const std::string& adapter) {
    return run_cli("debug logits --model '" + tiny + "' --adapter '" + adapter +
                   "' --ids 1,2 --out /dev/null");
  };
  std::system(("cp -r '" + test::golden("adapters/tiny_qv") + "' '" + dir / "dora" + "'").c_str());
  std::string cfg = test::read_file(dir / "dora/adapter_config.json");
  const size_t dora = cfg.find("\"use_dora\": false");
  ASSERT_NE(dora, std::string::npos);
  cfg.replace(dora, 17, "\"use_dora\": true");
  test::write_file(dir / "dora/adapter_config.json", cfg);
  test::CommandResult r = logits(dir / "dora");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("DoRA"), std::string::npos) << r.output;

  // An adapter for another model shape.
  r = logits(test::golden("adapters/odd_all"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("another model"), std::string::npos) << r.output;

  r = logits(dir / "missing");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("adapter_config.json"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace loratune
