// The train / eval / merge commands end to end on the tiny model.
#include <cmath>
#include <csignal>
#include <filesystem>
#include <sstream>

#include <unistd.h>

#include "io/json_file.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace loratune {
namespace {

using test::run_cli;

std::string sample_data() {
  return test::source_dir() + "/examples/data/sample_seed.json";
}
std::string train_cmd(const std::string& out, const std::string& extra, int threads = 1) {
  return "train --model '" + test::tiny_model_dir() + "' --data '" + sample_data() +
         "' --output-dir '" + out +
         "' --per-device-train-batch-size 4 --learning-rate 1e-3 "
         "--threads " +
         std::to_string(threads) + " " + extra;
}

TEST(Trainer, EpochsEvalCheckpointsAndBestModel) {
  test::TempDir dir;
  test::CommandResult r = run_cli(train_cmd(dir / "out",
                                            "--num-train-epochs 2 --eval-strategy epoch "
                                            "--save-strategy epoch --load-best-model-at-end "
                                            "--logging-steps 1"));
  ASSERT_EQ(r.status, 0) << r.output;
  // 46 records: 10 eval (last 20%), 36 train -> 9 batches of 4 -> 9 steps per epoch.
  EXPECT_TRUE(dir_exists(dir / "out/checkpoint-9"));
  EXPECT_TRUE(dir_exists(dir / "out/checkpoint-18"));
  Json state = read_json_file(dir / "out/trainer_state.json");
  EXPECT_EQ(state["global_step"], 18);
  ASSERT_TRUE(state["best_model_checkpoint"].is_string());
  const std::string best = state["best_model_checkpoint"].get<std::string>();
  EXPECT_EQ(test::read_file(best + "/adapter_model.safetensors"),
            test::read_file(dir / "out/final_model/adapter_model.safetensors"));
  std::vector<double> eval_losses;
  for (const Json& rec : test::log_records(dir / "out/trainer_log.jsonl"))
    if (rec.contains("eval_loss")) eval_losses.push_back(rec["eval_loss"].get<double>());
  ASSERT_EQ(eval_losses.size(), 2u);
  EXPECT_LT(eval_losses[1], eval_losses[0]);
  EXPECT_NEAR(*state["best_metric"].get_ptr<const Json::number_float_t*>(),
              std::min(eval_losses[0], eval_losses[1]), 1e-12);
  EXPECT_NE(test::read_file(dir / "out/loss.svg").find("<svg"), std::string::npos);
  Json adapter_config = read_json_file(dir / "out/final_model/adapter_config.json");
  EXPECT_EQ(adapter_config["r"], 8);
  EXPECT_EQ(adapter_config["lora_alpha"], 16);

  // eval on the final adapter reproduces the best checkpoint's eval loss: the eval split is
  // the last 10 records, so write them out as their own file.
  Json records = read_json_file(sample_data());
  Json tail = Json::array();
  for (size_t i = records.size() - 10; i < records.size(); ++i) tail.push_back(records[i]);
  test::write_file(dir / "eval.json", tail.dump());
  test::CommandResult e =
      run_cli("eval --model '" + test::tiny_model_dir() + "' --adapter '" +
              dir / "out/final_model" + "' --data '" + dir / "eval.json" + "' --json --threads 1");
  ASSERT_EQ(e.status, 0) << e.output;
  EXPECT_NEAR(Json::parse(e.output)["eval_loss"].get<double>(), state["best_metric"].get<double>(),
              1e-5);
}

// A tiny model learns four answers by heart: generation with the adapter gives the trained
// answer (and stops at the learned EOS), the base model does not.
TEST(Trainer, AdapterReproducesTrainedAnswers) {
  test::TempDir dir;
  test::write_file(dir / "data.jsonl", test::kFourAnswers);
  test::CommandResult r = run_cli(
      "train --model '" + test::learnable_tiny_model_dir() + "' --data '" + dir / "data.jsonl" +
      "' --output-dir '" + dir / "out" +
      "' --eval-fraction 0 --per-device-train-batch-size 4 --max-steps 80 --learning-rate 1e-2 "
      "--target-modules all-linear --lora-r 16 --lora-alpha 32 --lora-dropout 0 "
      "--save-strategy no --threads 1");
  ASSERT_EQ(r.status, 0) << r.output;
  const std::string ask = "generate --model '" + test::learnable_tiny_model_dir() +
                          "' --prompt 'What is the capital of France?' --max-new-tokens 20";
  EXPECT_EQ(run_cli(ask + " --adapter '" + dir / "out/final_model" + "'").output, "Paris.\n");
  EXPECT_NE(run_cli(ask).output, "Paris.\n");
  EXPECT_EQ(run_cli("generate --model '" + test::learnable_tiny_model_dir() + "' --adapter '" +
                    dir / "out/final_model" + "' --instruction 'Translate to Chinese.' --input dog")
                .output,
            "狗\n");
  // --chat reads one instruction per line.
  test::write_file(dir / "questions.txt", "What is the capital of France?\n");
  EXPECT_EQ(run_cli("generate --model '" + test::learnable_tiny_model_dir() + "' --adapter '" +
                    dir / "out/final_model" + "' --chat --max-new-tokens 20 < '" +
                    dir / "questions.txt" + "'")
                .output,
            "Paris.\n");
}

TEST(Trainer, ResumeGivesTheSameLosses) {
  test::TempDir dir;
  const std::string flags =
      "--max-steps 6 --save-steps 3 --logging-steps 1 --gradient-accumulation-steps 2 "
      "--eval-fraction 0";
  test::CommandResult full = run_cli(train_cmd(dir / "a", flags));
  ASSERT_EQ(full.status, 0) << full.output;
  // A run that stopped after step 3: its output dir holds checkpoint-3 only.
  std::system(("mkdir -p '" + dir / "b" + "' && cp -r '" + dir / "a/checkpoint-3" + "' '" +
               dir / "b/" + "'")
                  .c_str());
  test::CommandResult resumed =
      run_cli(train_cmd(dir / "b", flags + " --resume-from-checkpoint latest"));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  auto a = test::log_records(dir / "a/trainer_log.jsonl");
  auto b = test::log_records(dir / "b/trainer_log.jsonl");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(b[i]["step"], a[3 + i]["step"]);
    EXPECT_DOUBLE_EQ(b[i]["loss"].get<double>(), a[3 + i]["loss"].get<double>())
        << "step " << 4 + i;
  }
  EXPECT_EQ(test::read_file(dir / "a/final_model/adapter_model.safetensors"),
            test::read_file(dir / "b/final_model/adapter_model.safetensors"));
}

// The stop signals are blocked in every thread but the one that waits for them (sigwait
// unblocks them while it waits): a handler run on a thread inside one of oneDNN's sgemm
// kernels, whose stack pointer then points into the heap, corrupted it.
TEST(Trainer, SigtermWritesACheckpointAndSaysHowToResume) {
  test::TempDir dir;
  const std::string cmd =
      "'" + test::binary() + "' " +
      train_cmd(dir / "out", "--max-steps 100000 --save-strategy no", 2) + " >'" + dir / "log.txt" +
      "' 2>&1 & pid=$!; sleep 3; for t in /proc/$pid/task/*; do "
      "echo $(cat $t/comm) $(grep SigBlk $t/status); done >'" +
      dir / "masks.txt" + "'; kill -TERM $pid; wait $pid; echo $? >'" + dir / "status.txt" + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(test::read_file(dir / "status.txt"), "130\n") << test::read_file(dir / "log.txt");
  EXPECT_NE(test::read_file(dir / "log.txt").find("--resume-from-checkpoint latest"),
            std::string::npos);
  std::istringstream masks(test::read_file(dir / "masks.txt"));
  int threads = 0, waiting = 0;
  for (std::string name, label, hex; masks >> name >> label >> hex; ++threads) {
    if (name == "stop-signals") {
      ++waiting;
      continue;
    }
    const unsigned long long blocked = std::stoull(hex, nullptr, 16);
    const unsigned long long stop = (1ull << (SIGINT - 1)) | (1ull << (SIGTERM - 1));
    EXPECT_EQ(blocked & stop, stop) << "thread " << name << " takes SIGINT/SIGTERM: " << hex;
  }
  EXPECT_EQ(waiting, 1);
  EXPECT_GE(threads, 3) << "main, signal and OpenMP threads";
  int checkpoints = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir / "out"))
    if (entry.path().filename().string().rfind("checkpoint-", 0) == 0) {
      ++checkpoints;
      EXPECT_TRUE(file_exists(entry.path().string() + "/optimizer.safetensors"));
      EXPECT_TRUE(file_exists(entry.path().string() + "/trainer_state.json"));
    }
  EXPECT_EQ(checkpoints, 1);
}

// Interrupted by SIGTERM at some step k and resumed: the logged losses are those of a run that
// was never interrupted (constant schedule, so the total step count does not matter).
TEST(Trainer, SigtermThenResumeEqualsUninterrupted) {
  test::TempDir dir;
  const std::string flags =
      "--lr-scheduler-type constant --logging-steps 1 --save-strategy no "
      "--eval-fraction 0 --gradient-accumulation-steps 2";
  const std::string interrupted = "'" + test::binary() + "' " +
                                  train_cmd(dir / "a", flags + " --max-steps 100000") +
                                  " >/dev/null 2>&1 & pid=$!; sleep 2; kill -TERM $pid; wait $pid";
  ASSERT_EQ(std::system(interrupted.c_str()) >> 8, 130);
  const int64_t k = test::log_records(dir / "a/trainer_log.jsonl").back()["step"].get<int64_t>();
  const std::string total = " --max-steps " + std::to_string(k + 3);
  test::CommandResult resumed =
      run_cli(train_cmd(dir / "a", flags + total + " --resume-from-checkpoint latest"));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  ASSERT_EQ(run_cli(train_cmd(dir / "b", flags + total)).status, 0);
  auto a = test::log_records(dir / "a/trainer_log.jsonl");
  auto b = test::log_records(dir / "b/trainer_log.jsonl");
  ASSERT_EQ(a.size(), static_cast<size_t>(k + 3));
  ASSERT_EQ(b.size(), a.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]);
    EXPECT_DOUBLE_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << "step " << i + 1;
  }
}

TEST(Trainer, RefusesBadOutputDirs) {
  test::TempDir dir;
  ASSERT_EQ(run_cli(train_cmd(dir / "out", "--max-steps 1")).status, 0);
  test::CommandResult again = run_cli(train_cmd(dir / "out", "--max-steps 1"));
  EXPECT_EQ(again.status, 2);
  EXPECT_NE(again.output.find("--overwrite-output-dir"), std::string::npos) << again.output;
  EXPECT_EQ(run_cli(train_cmd(dir / "out", "--max-steps 1 --overwrite-output-dir")).status, 0);
  // The new run's log replaces the old one: one step, one record.
  EXPECT_EQ(test::log_records(dir / "out/trainer_log.jsonl").size(), 1u);

  // An output path that cannot be a directory: a clear error, nothing written.
  test::write_file(dir / "file", "x");
  test::CommandResult blocked = run_cli(train_cmd(dir / "file/out", "--max-steps 1"));
  EXPECT_EQ(blocked.status, 1);
  EXPECT_NE(blocked.output.find("cannot create directory"), std::string::npos) << blocked.output;
}

// A full disk, simulated with a file-size limit (SIGXFSZ ignored, so writes fail with EFBIG):
// a clear error and no checkpoint, whole or partial, left behind.
TEST(Trainer, FullDiskLeavesNoPartialCheckpoint) {
  test::TempDir dir;
  const std::string cmd = "trap '' XFSZ; ulimit -f 20; '" + test::binary() + "' " +
                          train_cmd(dir / "out", "--max-steps 2 --save-steps 1") + " >'" +
                          dir / "log.txt" + "' 2>&1; echo \\$? >'" + dir / "status.txt" + "'";
  ASSERT_EQ(std::system(("bash -c \"" + cmd + "\"").c_str()), 0);
  EXPECT_EQ(test::read_file(dir / "status.txt"), "1\n") << test::read_file(dir / "log.txt");
  EXPECT_NE(test::read_file(dir / "log.txt").find("disk full"), std::string::npos)
      << test::read_file(dir / "log.txt");
  for (const auto& entry : std::filesystem::directory_iterator(dir / "out")) {
    const std::string name = entry.path().filename().string();
    EXPECT_EQ(name.find("checkpoint"), std::string::npos) << name;
    EXPECT_EQ(name.find(".tmp"), std::string::npos) << name;
  }
}

TEST(Trainer, RefusesReadOnlyOutputDir) {
  test::TempDir dir;
  std::system(("mkdir -p '" + dir / "ro" + "' && chmod 555 '" + dir / "ro" + "'").c_str());
  if (access((dir / "ro").c_str(), W_OK) == 0) GTEST_SKIP() << "this user can write anywhere";
  test::CommandResult ro = run_cli(train_cmd(dir / "ro", "--max-steps 1"));
  EXPECT_EQ(ro.status, 1);
  EXPECT_NE(ro.output.find("writable"), std::string::npos) << ro.output;
  EXPECT_TRUE(std::filesystem::is_empty(dir / "ro"));
}

TEST(Trainer, ConfigFileAndCommandLine) {
  test::TempDir dir;
  test::write_file(dir / "c.yaml",
                   "learning_rate: 0.002\nmax_steps: 2\nlogging_steps: 1\n"
                   "target_modules: [q_proj, k_proj]\neval_fraction: 0\n");
  test::CommandResult r =
      run_cli(train_cmd(dir / "out", "--config '" + dir / "c.yaml" + "' --max-steps 3"));
  ASSERT_EQ(r.status, 0) << r.output;
  auto logs = test::log_records(dir / "out/trainer_log.jsonl");
  EXPECT_EQ(logs.size(), 3u);  // the command line's --max-steps wins
  EXPECT_EQ(read_json_file(dir / "out/final_model/adapter_config.json")["target_modules"],
            Json({"q_proj", "k_proj"}));
  test::write_file(dir / "bad.yaml", "learning_rat: 1\n");
  test::CommandResult bad = run_cli(train_cmd(dir / "out2", "--config '" + dir / "bad.yaml" + "'"));
  EXPECT_EQ(bad.status, 2);
  EXPECT_NE(bad.output.find("unknown key 'learning_rat'"), std::string::npos) << bad.output;
}

TEST(Trainer, SeedConfigFileRuns) {
  test::TempDir dir;
  test::CommandResult r =
      run_cli(train_cmd(dir / "out", "--config '" + test::source_dir() +
                                         "/examples/seed.yaml' --data-fraction 1 --max-steps 2"));
  ASSERT_EQ(r.status, 0) << r.output;
  Json adapter = read_json_file(dir / "out/final_model/adapter_config.json");
  EXPECT_EQ(adapter["target_modules"], Json({"q_proj", "v_proj"}));
  EXPECT_EQ(adapter["lora_dropout"], 0.05);
  EXPECT_TRUE(dir_exists(dir / "out/checkpoint-2"));
}

TEST(Merge, MergedLogitsEqualUnmergedAdapter) {
  test::TempDir dir;
  const std::string model = test::golden("models/tiny"),
                    adapter = test::golden("adapters/tiny_all");
  ASSERT_EQ(run_cli("merge --model '" + model + "' --adapter '" + adapter + "' --out '" +
                    dir / "merged" + "'")
                .status,
            0);
  const std::string ids = "5,17,300,42,7,7,256,1";
  ASSERT_EQ(run_cli("debug logits --model '" + model + "' --adapter '" + adapter + "' --ids " +
                    ids + " --out '" + dir / "a.safetensors" + "'")
                .status,
            0);
  ASSERT_EQ(run_cli("debug logits --model '" + dir / "merged" + "' --ids " + ids + " --out '" +
                    dir / "b.safetensors" + "'")
                .status,
            0);
  SafetensorsFile a(dir / "a.safetensors"), b(dir / "b.safetensors");
  const float* x = reinterpret_cast<const float*>(a.find("logits")->data);
  const float* y = reinterpret_cast<const float*>(b.find("logits")->data);
  float max_diff = 0;
  for (int64_t i = 0; i < a.find("logits")->numel(); ++i)
    max_diff = std::max(max_diff, std::fabs(x[i] - y[i]));
  EXPECT_LE(max_diff, 1e-4f);
  // generate --merge gives the same text as the unmerged adapter.
  const std::string gen = "generate --model '" + model + "' --adapter '" + adapter +
                          "' --prompt-ids 1,2,3 --max-new-tokens 12";
  EXPECT_EQ(run_cli(gen).output, run_cli(gen + " --merge").output);
}

}  // namespace
}  // namespace loratune
