// Data-parallel training under mpirun on this host: N ranks train what one process trains
// with the same global batch, rank 0 alone writes, checkpoints resume with another N, and a
// rank that dies ends the job.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>

#include "dist/world.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "test_util.h"

namespace loratune {
namespace {

// Why the MPI tests cannot run here, or empty.
std::string mpi_missing() {
  if (!dist::built_with_mpi()) return "built without MPI (LORATUNE_MPI off)";
  if (std::system("command -v mpirun >/dev/null 2>&1") != 0) return "no mpirun on the PATH";
  if (!test::have_qwen2_tokenizer()) return test::kNeedsQwen2Tokenizer;
  return "";
}

#define SKIP_WITHOUT_MPI()                 \
  do {                                     \
    const std::string why = mpi_missing(); \
    if (!why.empty()) GTEST_SKIP() << why; \
  } while (0)

// `loratune train` on the tiny model with the Qwen2 tokenizer and the sample data:
// per-device batch `batch`, two batches per step, LoRA dropout on, one thread per rank, fp32.
// What differs between the runs is the order of float sums, and the test asks that it stays
// at its own size: in bf16, a sum that changes in its last fp32 bit can round to the other
// bf16 neighbour (a 2^-9 step), and a few steps turn that into 1e-4 differences; and the
// learning rate is small, as at 1e-3 Adam's normalised steps grow even fp32 rounding into
// 1e-4 differences by step 4 (between two single-process runs with different pass sizes).
std::string train_args(const std::string& out, int batch, const std::string& extra) {
  return "train --model '" + test::qwen2_vocab_tiny_model_dir() + "' --data '" +
         test::source_dir() + "/examples/data/sample_seed.json' --output-dir '" + out +
         "' --per-device-train-batch-size " + std::to_string(batch) +
         " --gradient-accumulation-steps 2 --learning-rate 2e-4 --lora-dropout 0.1 "
         "--logging-steps 1 --threads 1 --bf16 false " +
         extra;
}

// A shell loop that waits (up to 120 s) until `path` exists and is not empty: training has
// got that far, however slow the machine (a sanitizer build, a busy CI host).
std::string wait_for(const std::string& path) {
  return "for i in $(seq 1200); do [ -s '" + path + "' ] && break; sleep 0.1; done; ";
}

// `mpirun ... loratune` for `ranks` ranks on this host. LeakSanitizer is off in the ranks:
// Open MPI's own allocations, freed by nobody after its plugins are unloaded at finalize, read
// as leaks (the single-process tests check the same code for leaks).
std::string mpirun(int ranks) {
  return "mpirun --allow-run-as-root --oversubscribe -x ASAN_OPTIONS=detect_leaks=0 -np " +
         std::to_string(ranks) + " '" + test::binary() + "' ";
}

test::CommandResult run_ranks(int ranks, const std::string& args) {
  return test::run_shell(mpirun(ranks) + args + " 2>&1");
}

void expect_relative(double a, double b, double tol, const std::string& what) {
  EXPECT_LE(std::fabs(a - b), tol * std::max(std::fabs(a), std::fabs(b)))
      << what << ": " << a << " vs " << b;
}

// The step records (loss, grad norm) and eval records of two runs agree within 1e-5.
void expect_same_log(const std::string& a_path, const std::string& b_path) {
  const auto a = test::log_records(a_path), b = test::log_records(b_path);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["step"], b[i]["step"]);
    for (const char* key : {"loss", "grad_norm", "eval_loss"})
      if (a[i].contains(key))
        expect_relative(a[i][key].get<double>(), b[i][key].get<double>(), 1e-5,
                        std::string(key) + " of record " + std::to_string(i));
  }
}

void expect_same_adapter(const std::string& a_dir, const std::string& b_dir) {
  SafetensorsFile a(a_dir + "/adapter_model.safetensors"), b(b_dir + "/adapter_model.safetensors");
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& [name, ta] : a.tensors()) {
    const TensorInfo* found = b.find(name);
    ASSERT_NE(found, nullptr) << name;
    const TensorInfo& tb = *found;
    ASSERT_EQ(ta.numel(), tb.numel()) << name;
    const float* pa = reinterpret_cast<const float*>(ta.data);
    const float* pb = reinterpret_cast<const float*>(tb.data);
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < ta.numel(); ++i) {
      diff += (pa[i] - pb[i]) * double(pa[i] - pb[i]);
      norm += pa[i] * double(pa[i]);
    }
    EXPECT_LE(std::sqrt(diff), 1e-5 * std::sqrt(norm) + 1e-12) << name;
  }
}

std::set<std::string> files_under(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir))
    names.insert(std::filesystem::relative(e.path(), dir).string());
  return names;
}

// One process with the global batch against `ranks` ranks of `per_rank` examples each: the
// same log, the same adapter, and rank 0 alone wrote (the single process's files).
void expect_ranks_train_as_one(const std::string& dir, int ranks, int per_rank,
                               const std::string& flags) {
  test::CommandResult one = test::run_cli(train_args(dir + "/one", ranks * per_rank, flags));
  ASSERT_EQ(one.status, 0) << one.output;
  test::CommandResult many = run_ranks(ranks, train_args(dir + "/many", per_rank, flags));
  ASSERT_EQ(many.status, 0) << many.output;
  expect_same_log(dir + "/one/trainer_log.jsonl", dir + "/many/trainer_log.jsonl");
  expect_same_adapter(dir + "/one/final_model", dir + "/many/final_model");
  EXPECT_EQ(files_under(dir + "/one"), files_under(dir + "/many"));
}

TEST(Mpi, TwoRanksTrainWhatOneProcessTrains) {
  SKIP_WITHOUT_MPI();
  test::TempDir dir;
  expect_ranks_train_as_one(dir.path(), 2, 2,
                            "--max-steps 5 --eval-strategy steps --eval-steps 5 --save-steps 5");
}

TEST(Mpi, UnevenLastBatchAndAnIdleRank) {
  SKIP_WITHOUT_MPI();
  // 36 training examples in global batches of 15: 15, 15, 6. In the last one rank 0 trains 5
  // examples, rank 1 one and rank 2 none.
  test::TempDir dir;
  expect_ranks_train_as_one(dir.path(), 3, 5, "--num-train-epochs 1 --eval-fraction 0.2");
}

TEST(Mpi, ResumeWithAnotherNumberOfRanks) {
  SKIP_WITHOUT_MPI();
  test::TempDir dir;
  const std::string flags = "--max-steps 6 --save-steps 3 --eval-fraction 0";
  test::CommandResult full = test::run_cli(train_args(dir / "full", 4, flags));
  ASSERT_EQ(full.status, 0) << full.output;
  const auto reference = test::log_records(dir / "full/trainer_log.jsonl");
  ASSERT_EQ(reference.size(), 6u);
  // A 1-process checkpoint resumed by 2 ranks, and a 2-rank checkpoint by 1 process.
  test::CommandResult two = run_ranks(2, train_args(dir / "two", 2, flags));
  ASSERT_EQ(two.status, 0) << two.output;
  for (const auto& [from, to, ranks] : {std::tuple{"full", "a", 2}, std::tuple{"two", "b", 1}}) {
    const std::string out = dir / to;
    std::filesystem::create_directories(out);
    std::filesystem::copy(dir / (std::string(from) + "/checkpoint-3"), out + "/checkpoint-3",
                          std::filesystem::copy_options::recursive);
    const std::string args = train_args(out, 4 / ranks, flags + " --resume-from-checkpoint latest");
    test::CommandResult r = ranks == 1 ? test::run_cli(args) : run_ranks(ranks, args);
    ASSERT_EQ(r.status, 0) << r.output;
    const auto resumed = test::log_records(out + "/trainer_log.jsonl");
    ASSERT_EQ(resumed.size(), 3u) << to;
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(resumed[i]["step"], reference[3 + i]["step"]);
      expect_relative(resumed[i]["loss"].get<double>(), reference[3 + i]["loss"].get<double>(),
                      1e-5, std::string(to) + " step " + std::to_string(4 + i));
    }
  }
}

TEST(Mpi, SigtermToOneRankStopsThemAllWithACheckpoint) {
  SKIP_WITHOUT_MPI();
  test::TempDir dir;
  const std::string cmd =
      mpirun(2) + train_args(dir / "out", 2, "--max-steps 100000 --save-strategy no") + " >'" +
      dir / "log.txt" + "' 2>&1 & m=$!; " + wait_for(dir / "out/trainer_log.jsonl") +
      "kill -TERM $(pgrep -P $m | tail -n 1); wait $m; echo $? >'" + dir / "status.txt" + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const std::string log = test::read_file(dir / "log.txt");
  EXPECT_EQ(test::read_file(dir / "status.txt"), "130\n") << log;
  EXPECT_NE(log.find("--resume-from-checkpoint latest"), std::string::npos) << log;
  // The step rank 0 saved is the last one logged: both ranks stopped after it.
  const auto records = test::log_records(dir / "out/trainer_log.jsonl");
  ASSERT_FALSE(records.empty());
  const int64_t last = records.back()["step"].get<int64_t>();
  EXPECT_TRUE(std::filesystem::exists(dir / ("out/checkpoint-" + std::to_string(last)))) << log;
}

TEST(Mpi, ARankThatDiesEndsTheJob) {
  SKIP_WITHOUT_MPI();
  test::TempDir dir;
  // Rank 1 is killed mid-run; the job must end non-zero, name the rank, and leave whole
  // checkpoints only (each one resumes).
  const std::string cmd =
      mpirun(2) + train_args(dir / "out", 2, "--max-steps 100000 --save-steps 2") + " >'" +
      dir / "log.txt" + "' 2>&1 & m=$!; " + wait_for(dir / "out/checkpoint-4/trainer_state.json") +
      "kill -KILL $(pgrep -P $m | tail -n 1); "
      "timeout 60 tail --pid=$m -f /dev/null; echo $? >'" +
      dir / "timeout.txt" + "'; wait $m; echo $? >'" + dir / "status.txt" + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(test::read_file(dir / "timeout.txt"), "0\n") << "the job did not end within 60 s";
  const std::string log = test::read_file(dir / "log.txt");
  EXPECT_NE(test::read_file(dir / "status.txt"), "0\n") << log;
  EXPECT_NE(log.find("rank 1"), std::string::npos) << log;
  int checkpoints = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir / "out")) {
    const std::string name = e.path().filename().string();
    if (name.rfind("checkpoint-", 0) != 0) continue;
    ++checkpoints;
    for (const char* f : {"adapter_model.safetensors", "adapter_config.json",
                          "optimizer.safetensors", "trainer_state.json"})
      EXPECT_TRUE(std::filesystem::exists(e.path() / f)) << name << " lacks " << f;
  }
  EXPECT_GT(checkpoints, 0) << log;
  test::CommandResult resumed =
      test::run_cli(train_args(dir / "out", 4, "--max-steps 1 --resume-from-checkpoint latest"));
  EXPECT_NE(resumed.output.find("resumed from"), std::string::npos) << resumed.output;
}

}  // namespace
}  // namespace loratune
