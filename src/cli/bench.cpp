// loratune bench: performance figures for a model folder, one JSON line per figure on stdout
// and a table on stderr. Every figure (each train shape, the seed job, generation, ...) runs
// in its own child process (this program again, with the hidden --child option), so each
// one's peak RSS is its own: the parent stays small and reads the child's ru_maxrss.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "cli/bench_figures.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "core/stop_signals.h"
#include "core/threads.h"
#include "io/json_file.h"
#include "model/config.h"

namespace loratune::cli {

namespace {

using bench::OJson;

const char* const kFigures[] = {"sgemm", "bandwidth", "train", "seed", "generate", "serve"};

const CommandSpec kSpec = {
    "bench",
    "[--model DIR] [--data FILE] [--only LIST] [options]",
    "Measures performance figures of a model folder and prints one JSON line per figure on\n"
    "stdout, then a table on stderr. Each train shape, the seed job and generation run in a\n"
    "child process of their own, so each peak_rss_gb is that figure's alone.\n"
    "  cpu        the CPU, its features, oneDNN's ISA, one thread's vdpbf16ps and fp32 FMA\n"
    "             GFLOP/s (bf16 multiplies in fp32 where vdpbf16ps is the slower), the matrix\n"
    "             kernel each mode runs, and the CUDA GPUs this build sees\n"
    "  sgemm      GFLOP/s of cblas_sgemm and of loratune's linear kernels (own AVX2, oneDNN\n"
    "             fp32, oneDNN bf16, fp32 on widened bf16, generation's own bf16 kernels) on\n"
    "             the model's linear shapes, M = 512;\n"
    "             sgemm_peak is the best fp32 figure, bf16_peak the best bf16 one\n"
    "  bandwidth  streaming read of max(1 GiB, 4 x L3), best of 5 passes, GB/s\n"
    "  train      LoRA r 8 on q_proj,v_proj, random tokens, all labelled: seconds per step\n"
    "             (median after a warm-up step), tokens/s, MFU against the mode's peak (fp32:\n"
    "             sgemm_peak, bf16: bf16_peak). FLOPs per\n"
    "             token = 4*P + 6*L*H*D*T: P = frozen linear weights incl. lm_head (forward 2P,\n"
    "             input gradient 2P; LoRA not counted), causal attention 2*L*H*D*T forward and\n"
    "             twice that backward (T = sequence length); the step split into its\n"
    "             products with frozen weights (seconds, GFLOP/s in the step), attention\n"
    "             (seconds) and the rest\n"
    "  seed       the seed recipe (examples/seed.yaml) end to end on the first --seed-records\n"
    "             records of --data, split 80/20, with the Python peer's own run of that job\n"
    "             where one was measured (its figure, machine and date: no ratio, as it ran\n"
    "             elsewhere); tokens_per_second = train tokens over the training loop's\n"
    "             seconds. Skipped without --data\n"
    "  generate   greedy, batch 1: prefill of a random prompt, then --new-tokens decode steps;\n"
    "             the bound is bandwidth / bytes of all weight matrices (lm_head once), with\n"
    "             the bandwidth figure's, and with the matrices' own plain reads before every\n"
    "             16 decode steps and after the last (median over those chunks)\n"
    "  serve      loratune serve on a loopback port (16 slots), greedy completions of a\n"
    "             random --prompt-tokens prompt and --new-tokens tokens for 1, 4 and 16\n"
    "             concurrent clients (2 requests per client, at least 4): generated tokens/s,\n"
    "             its ratio to 1 client, p50/p99 latency, failed requests. Needs a tokenizer\n"
    "train, seed, generate and serve run once per mode of --bf16 (both: fp32, then bf16).",
    {
        {"--model", "DIR",
         "model folder (default: init-model --preset qwen2-0.5b in a temp folder)"},
        {"--threads", "N", "threads", "all cores"},
        {"--only", "LIST", "figures to run: sgemm,bandwidth,train,seed,generate,serve", "all"},
        {"--steps", "N", "training steps per train shape (the first is a warm-up when N > 1)", "3"},
        {"--train-shapes", "LIST", "train shapes BATCHxSEQ", "4x128,4x512"},
        {"--data", "FILE", "alpaca JSON / JSONL for the seed job (without it: no seed figure)"},
        {"--seed-records", "N", "records of --data the seed job uses (split 80/20)", "1000"},
        {"--tokenizer", "DIR", "tokenizer files for the seed job (default: the model folder's)"},
        {"--prompt-tokens", "N", "prompt length for generation", "128"},
        {"--new-tokens", "N", "tokens to decode", "128"},
        {"--bf16", "[both|true|false]", "modes of train, seed, generate and serve", "both"},
        {"--child", "FIGURE", "internal: run one figure in this process", "", false, true},
    }};

struct Settings {
  std::string model;  // empty: create the default model
  int threads = 0;
  std::set<std::string> only;
  int steps = 3;
  std::vector<std::pair<int, int>> shapes;  // (batch, seq)
  std::string data, tokenizer;
  int64_t seed_records = 1000;
  int prompt_tokens = 128;
  int new_tokens = 128;
  std::vector<ops::Precision> modes;
  bool wants(const std::string& figure) const { return only.count(figure) > 0; }
};

int positive(const ParsedArgs& a, const std::string& name, long long fallback) {
  const long long v = a.integer(name, fallback);
  if (v < 1 || v > (1ll << 30))
    throw UsageError(name + " must be a positive integer (got " + std::to_string(v) + ")");
  return static_cast<int>(v);
}

// "4x128" -> (4, 128).
std::pair<int, int> parse_shape(const std::string& text) {
  const size_t x = text.find('x');
  auto number = [&](const std::string& part) {
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(part.c_str(), &end, 10);
    if (part.empty() || *end != '\0' || errno != 0 || v < 1 || v > (1l << 20))
      throw UsageError("bad train shape '" + text + "'", "--train-shapes",
                       "write BATCHxSEQ with positive numbers, such as 4x128,4x512");
    return static_cast<int>(v);
  };
  if (x == std::string::npos)
    throw UsageError("bad train shape '" + text + "'", "--train-shapes",
                     "write BATCHxSEQ, such as 4x128,4x512");
  return {number(text.substr(0, x)), number(text.substr(x + 1))};
}

Settings parse_settings(const ParsedArgs& a) {
  Settings s;
  s.model = a.str("--model");
  s.threads = a.has("--threads") ? positive(a, "--threads", 0) : 0;
  for (const std::string& name :
       split_list(a.str("--only", "sgemm,bandwidth,train,seed,generate,serve"))) {
    if (std::find(std::begin(kFigures), std::end(kFigures), name) == std::end(kFigures))
      throw UsageError("unknown figure '" + name + "'", "--only",
                       "choose from sgemm,bandwidth,train,seed,generate,serve");
    s.only.insert(name);
  }
  s.steps = positive(a, "--steps", 3);
  for (const std::string& item : split_list(a.str("--train-shapes", "4x128,4x512")))
    s.shapes.push_back(parse_shape(item));
  s.data = a.str("--data");
  s.tokenizer = a.str("--tokenizer");
  s.seed_records = positive(a, "--seed-records", 1000);
  s.prompt_tokens = positive(a, "--prompt-tokens", 128);
  s.new_tokens = positive(a, "--new-tokens", 128);
  const std::string modes = a.str("--bf16", "both");
  if (modes == "both" || modes == "false" || modes == "0") s.modes.push_back(ops::Precision::kF32);
  if (modes == "both" || modes == "true" || modes == "1") s.modes.push_back(ops::Precision::kBF16);
  if (s.modes.empty())
    throw UsageError("--bf16 takes both, true or false, not '" + modes + "'", "bench");
  return s;
}

bool has_tokenizer(const std::string& dir) {
  return file_exists(dir + "/tokenizer.json") ||
         (file_exists(dir + "/vocab.json") && file_exists(dir + "/merges.txt"));
}

// ---- the child side: one figure, its JSON lines on stdout ----

int run_child(const std::string& figure, const Settings& s) {
  std::vector<OJson> lines;
  if (figure == "sgemm") {
    lines = bench::sgemm_figure(load_model_config(s.model), 512);
  } else if (figure == "bandwidth") {
    lines.push_back(bench::bandwidth_figure());
  } else if (figure.rfind("train:", 0) == 0) {
    const auto [batch, seq] = parse_shape(figure.substr(6));
    lines.push_back(bench::train_figure(s.model, batch, seq, s.steps));
  } else if (figure == "seed") {
    lines.push_back(bench::seed_figure({s.model, s.data, s.tokenizer, s.seed_records, s.threads}));
  } else if (figure == "generate") {
    lines.push_back(bench::generate_figure(s.model, s.prompt_tokens, s.new_tokens));
  } else if (figure == "serve") {
    lines = bench::serve_figure(s.model, s.tokenizer.empty() ? s.model : s.tokenizer,
                                s.prompt_tokens, s.new_tokens);
  } else {
    throw UsageError("unknown figure '" + figure + "'", "--child");
  }
  for (const OJson& line : lines) std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
  return 0;
}

// ---- the parent side ----

std::atomic<int> g_signal{0};
std::atomic<pid_t> g_child{0};

// SIGINT / SIGTERM reach the running child and end the benchmark after it, so that the
// temporary folders are removed.
class SignalGuard {
 public:
  SignalGuard()
      : listener_([](int sig) {
          g_signal = sig;
          if (const pid_t child = g_child; child > 0) kill(child, sig);
        }) {}

 private:
  StopSignalListener listener_;
};

struct ChildResult {
  std::vector<OJson> lines;
  double peak_rss_gb = 0.0;
};

// Runs `loratune ARGS` (this executable) and waits for it. capture: its stdout is returned
// as JSON lines; otherwise its stdout goes to our stderr. Throws on failure; `what` names it.
ChildResult spawn(const std::vector<std::string>& args, bool capture, const std::string& what) {
  std::vector<char*> argv;
  std::string arg0 = "loratune";
  argv.push_back(arg0.data());
  std::vector<std::string> copy = args;
  for (std::string& arg : copy) argv.push_back(arg.data());
  argv.push_back(nullptr);
  int fds[2] = {-1, -1};
  if (capture && pipe2(fds, O_CLOEXEC) != 0)
    throw Error(std::string("cannot create a pipe: ") + std::strerror(errno), what);
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) {
    if (capture) close(fds[0]), close(fds[1]);
    throw Error(std::string("cannot start a child process: ") + std::strerror(errno), what);
  }
  if (pid == 0) {  // only async-signal-safe calls until exec
    unblock_stop_signals_in_child();
    if (dup2(capture ? fds[1] : 2, 1) < 0) _exit(127);
    execv("/proc/self/exe", argv.data());
    _exit(127);
  }
  g_child = pid;
  std::string out;
  if (capture) {
    close(fds[1]);
    char buf[4096];
    for (;;) {
      const ssize_t n = read(fds[0], buf, sizeof buf);
      if (n > 0)
        out.append(buf, static_cast<size_t>(n));
      else if (n == 0 || errno != EINTR)
        break;
    }
    close(fds[0]);
  }
  int status = 0;
  rusage ru{};
  while (wait4(pid, &status, 0, &ru) < 0 && errno == EINTR) {
  }
  g_child = 0;
  if (const int sig = g_signal) throw Error("interrupted by signal " + std::to_string(sig), what);
  if (WIFSIGNALED(status))
    throw Error("the " + what + " was killed by signal " + std::to_string(WTERMSIG(status)), "",
                WTERMSIG(status) == SIGKILL ? "out of memory?" : "");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    const std::string msg = "the " + what + " failed (exit status " + std::to_string(code) + ")";
    if (code == 2) throw UsageError(msg);
    throw Error(msg);
  }
  ChildResult r;
  r.peak_rss_gb = static_cast<double>(ru.ru_maxrss) * 1024.0 / 1e9;  // ru_maxrss is in KiB
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty()) continue;
    try {
      r.lines.push_back(OJson::parse(line));
    } catch (const nlohmann::json::exception&) {
      throw Error("the " + what + " printed a line that is not JSON: " + line.substr(0, 80));
    }
  }
  if (capture && r.lines.empty()) throw Error("the " + what + " printed no result");
  return r;
}

// The arguments of a child that runs `figure` in `mode`, from the settings (the model
// resolved).
std::vector<std::string> child_args(const Settings& s, const std::string& figure,
                                    ops::Precision mode = ops::Precision::kF32) {
  std::vector<std::string> args = {"bench",
                                   "--child",
                                   figure,
                                   "--model",
                                   s.model,
                                   "--threads",
                                   std::to_string(s.threads),
                                   "--steps",
                                   std::to_string(s.steps),
                                   "--seed-records",
                                   std::to_string(s.seed_records),
                                   "--prompt-tokens",
                                   std::to_string(s.prompt_tokens),
                                   "--new-tokens",
                                   std::to_string(s.new_tokens),
                                   "--bf16",
                                   mode == ops::Precision::kBF16 ? "true" : "false"};
  if (!s.data.empty()) args.insert(args.end(), {"--data", s.data});
  if (!s.tokenizer.empty()) args.insert(args.end(), {"--tokenizer", s.tokenizer});
  return args;
}

double num(const OJson& j, const char* key) {
  const auto it = j.find(key);
  if (it == j.end() || !it->is_number()) throw Error(std::string("a result lacks '") + key + "'");
  return it->get<double>();
}

std::string fmt(double v) {
  char buf[64];
  if (std::fabs(v) >= 100)
    std::snprintf(buf, sizeof buf, "%.0f", v);
  else if (std::fabs(v) >= 10)
    std::snprintf(buf, sizeof buf, "%.1f", v);
  else
    std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

struct Row {
  std::string figure, value, unit, notes;
};

void print_table(const std::vector<Row>& rows) {
  std::vector<Row> all = {{"figure", "value", "unit", "notes"}};
  all.insert(all.end(), rows.begin(), rows.end());
  size_t w0 = 0, w1 = 0, w2 = 0;
  for (const Row& r : all) {
    w0 = std::max(w0, r.figure.size());
    w1 = std::max(w1, r.value.size());
    w2 = std::max(w2, r.unit.size());
  }
  std::fputs("\n", stderr);
  for (const Row& r : all)
    std::fprintf(stderr, "%-*s  %*s  %-*s  %s\n", static_cast<int>(w0), r.figure.c_str(),
                 static_cast<int>(w1), r.value.c_str(), static_cast<int>(w2), r.unit.c_str(),
                 r.notes.c_str());
}

const char* mode_name(ops::Precision mode) {
  return mode == ops::Precision::kBF16 ? "bf16" : "fp32";
}

void emit(const OJson& line) {
  std::printf("%s\n", line.dump().c_str());
  std::fflush(stdout);
}

}  // namespace

int run_bench(const Args& args) {
  const ParsedArgs a = parse_args(kSpec, args);
  Settings s = parse_settings(a);
  if (a.has("--child")) {
    set_num_threads(s.threads);
    const std::string figure = a.str("--child");
    // Generation and serving run on the kernels their commands use.
    select_precision(a, "false",
                     figure == "generate" || figure == "serve" ? ops::KernelUse::kRowInvariant
                                                               : ops::KernelUse::kFastest);
    return run_child(figure, s);
  }
  set_num_threads(s.threads);
  s.threads = num_threads();

  // Everything that can be checked is checked before the long work starts.
  const bool seed = s.wants("seed") && !s.data.empty();
  if (seed && !std::ifstream(s.data))
    throw Error("cannot read the data file", s.data, "check the --data path");
  if (!s.tokenizer.empty() && !has_tokenizer(s.tokenizer))
    throw Error("no tokenizer files found", s.tokenizer,
                "expected tokenizer.json or vocab.json + merges.txt");
  SignalGuard signals;
  std::optional<bench::TempFolder> default_model;
  if (s.model.empty()) {
    default_model.emplace("loratune_bench_model");
    s.model = default_model->path() + "/qwen2-0.5b";
    std::fprintf(stderr,
                 "bench: no --model: writing the Qwen2-0.5B shape with random f32 weights (as "
                 "'init-model --preset qwen2-0.5b') to %s, removed at exit\n",
                 s.model.c_str());
    std::vector<std::string> init = {"init-model",
                                     "--preset",
                                     "qwen2-0.5b",
                                     "--out",
                                     s.model,
                                     "--threads",
                                     std::to_string(s.threads)};
    if (!s.tokenizer.empty()) init.insert(init.end(), {"--tokenizer", s.tokenizer});
    spawn(init, false, "init-model child");
  }
  const ModelConfig config = load_model_config(s.model);
  for (const auto& [batch, seq] : s.shapes)
    if (s.wants("train") && config.max_position_embeddings > 0 &&
        seq > config.max_position_embeddings)
      throw UsageError("train sequence length " + std::to_string(seq) +
                           " exceeds max_position_embeddings (" +
                           std::to_string(config.max_position_embeddings) + ")",
                       "--train-shapes");
  if (s.wants("generate") && config.max_position_embeddings > 0 &&
      s.prompt_tokens + s.new_tokens + 1 > config.max_position_embeddings)
    throw UsageError("--prompt-tokens plus --new-tokens exceed max_position_embeddings (" +
                     std::to_string(config.max_position_embeddings) + ")");
  if (seed && s.tokenizer.empty() && !has_tokenizer(s.model))
    throw UsageError("the model folder has no tokenizer files, which the seed job needs", s.model,
                     "give --tokenizer DIR");

  std::vector<Row> rows;
  const OJson cpu = bench::cpu_figure();
  emit(cpu);
  const std::string dot_rates =
      cpu.contains("bf16_dot_gflops_per_thread")
          ? "; one thread: vdpbf16ps " + fmt(num(cpu, "bf16_dot_gflops_per_thread")) +
                " GFLOP/s, fp32 FMA " + fmt(num(cpu, "fp32_fma_gflops_per_thread"))
          : "";
  rows.push_back({"cpu", cpu.value("model", ""), "",
                  cpu.value("flags", "") + "; oneDNN ISA " + cpu.value("onednn_isa", "") +
                      "; OpenBLAS " + cpu.value("openblas_core", "") + dot_rates +
                      "; kernels fp32 " + cpu.value("fp32_kernel", "") + " (generation " +
                      cpu.value("fp32_generation_kernel", "") + "), bf16 " +
                      cpu.value("bf16_kernel", "") + " (generation " +
                      cpu.value("bf16_generation_kernel", "") + "); " + cpu.value("cuda", "")});
  std::optional<double> peak_gflops[2], bandwidth;  // by mode: fp32, bf16
  if (s.wants("sgemm") || s.wants("train")) {
    if (!s.wants("sgemm")) std::fputs("bench: measuring sgemm for the MFU\n", stderr);
    const ChildResult r = spawn(child_args(s, "sgemm"), true, "sgemm figure");
    for (const OJson& line : r.lines) emit(line);
    for (const OJson& line : r.lines) {
      const std::string figure = line.value("figure", "");
      if (figure != "sgemm_peak" && figure != "bf16_peak") continue;
      peak_gflops[figure == "bf16_peak"] = num(line, "gflops");
      rows.push_back({figure, fmt(num(line, "gflops")), "GFLOP/s",
                      line.value("shape", "") + " " + line.value("implementation", "") +
                          ", M=512, max over shapes and " +
                          (figure == "bf16_peak" ? "bf16" : "fp32") + " implementations"});
    }
  }
  if (s.wants("bandwidth") || s.wants("generate")) {
    if (!s.wants("bandwidth"))
      std::fputs("bench: measuring the memory bandwidth for the generation bound\n", stderr);
    const ChildResult r = spawn(child_args(s, "bandwidth"), true, "bandwidth figure");
    emit(r.lines.back());
    bandwidth = num(r.lines.back(), "gb_per_second");
    rows.push_back(
        {"bandwidth", fmt(*bandwidth), "GB/s",
         "streaming read of " + fmt(num(r.lines.back(), "buffer_bytes") / 1e9) + " GB, best of 5"});
  }
  if (s.wants("train")) {
    for (const ops::Precision mode : s.modes)
      for (const auto& [batch, seq] : s.shapes) {
        const std::string shape = std::to_string(batch) + "x" + std::to_string(seq);
        const std::string what = "train " + shape + " " + mode_name(mode);
        ChildResult r = spawn(child_args(s, "train:" + shape, mode), true, what + " figure");
        OJson line = r.lines.back();
        const double peak = *peak_gflops[mode == ops::Precision::kBF16];
        const double mfu =
            num(line, "flops_per_token") * num(line, "tokens_per_second") / (peak * 1e9);
        line[mode == ops::Precision::kBF16 ? "bf16_peak_gflops" : "sgemm_peak_gflops"] = peak;
        line["mfu"] = mfu;
        line["peak_rss_gb"] = r.peak_rss_gb;
        emit(line);
        // Where the step goes: its products with frozen weights at their rate in the step
        // (against the peak, which repeats one product warm), attention, and the rest.
        const double product_sec = num(line, "product_seconds_per_step");
        const double attention_sec = num(line, "attention_seconds_per_step");
        const double product_rate = num(line, "product_gflops_in_step");
        rows.push_back({what, fmt(num(line, "tokens_per_second")), "tokens/s",
                        fmt(num(line, "seconds_per_step")) + " s/step, MFU " + fmt(100 * mfu) +
                            " % of the " + mode_name(mode) + " peak, peak RSS " +
                            fmt(r.peak_rss_gb) + " GB; products " + fmt(product_sec) + " s at " +
                            fmt(product_rate) + " GFLOP/s (" + fmt(100 * product_rate / peak) +
                            " % of the peak), attention " + fmt(attention_sec) + " s, the rest " +
                            fmt(num(line, "seconds_per_step") - product_sec - attention_sec) +
                            " s"});
      }
  }
  if (s.wants("seed") && !seed) {
    std::fputs("bench: no --data: the seed figure is skipped (give --data FILE, alpaca JSON)\n",
               stderr);
    rows.push_back({"seed", "-", "", "skipped: no --data"});
  }
  for (const ops::Precision mode : seed ? s.modes : std::vector<ops::Precision>{}) {
    ChildResult r = spawn(child_args(s, "seed", mode), true, "seed figure");
    OJson line = r.lines.back();
    line["peak_rss_gb"] = r.peak_rss_gb;
    emit(line);
    std::string peer = "no peer run of this job measured";
    if (line.contains("peer"))
      peer = "the peer's run: " + fmt(num(line["peer"], "wall_seconds")) + " s, " +
             line["peer"].value("where", "") + ", " + line["peer"].value("when", "");
    rows.push_back({std::string("seed ") + mode_name(mode), fmt(num(line, "wall_seconds")),
                    "s (wall)",
                    fmt(num(line, "train_examples")) + "/" + fmt(num(line, "eval_examples")) +
                        " examples, " + fmt(num(line, "tokens_per_second")) +
                        " train tokens/s, peak RSS " + fmt(r.peak_rss_gb) + " GB; " + peer});
  }
  for (const ops::Precision mode : s.wants("generate") ? s.modes : std::vector<ops::Precision>{}) {
    ChildResult r = spawn(child_args(s, "generate", mode), true, "generate figure");
    OJson line = r.lines.back();
    const double bound = *bandwidth * 1e9 / num(line, "weight_bytes_per_token");
    const double fraction = num(line, "decode_tokens_per_second") / bound;
    line["bandwidth_gb_per_second"] = *bandwidth;
    line["bound_tokens_per_second"] = bound;
    line["fraction_of_bound"] = fraction;
    line["peak_rss_gb"] = r.peak_rss_gb;
    emit(line);
    rows.push_back({std::string("generate prefill ") + mode_name(mode),
                    fmt(num(line, "prefill_tokens_per_second")), "tokens/s",
                    std::to_string(s.prompt_tokens) + " prompt tokens, batch 1"});
    rows.push_back({std::string("generate decode ") + mode_name(mode),
                    fmt(num(line, "decode_tokens_per_second")), "tokens/s",
                    fmt(100 * fraction) + " % of the bandwidth bound (" + fmt(bound) +
                        " tokens/s); " + fmt(100 * num(line, "fraction_of_read_bound")) +
                        " % of the bound of the matrices' reads between decode chunks (" +
                        fmt(num(line, "matrix_read_gb_per_second")) + " GB/s, median of " +
                        fmt(num(line, "matrix_reads")) + "), peak RSS " + fmt(r.peak_rss_gb) +
                        " GB"});
  }
  const bool serve = s.wants("serve") && (has_tokenizer(s.model) || !s.tokenizer.empty());
  if (s.wants("serve") && !serve) {
    std::fputs("bench: the model has no tokenizer: the serve figure is skipped (--tokenizer DIR)\n",
               stderr);
    rows.push_back({"serve", "-", "", "skipped: no tokenizer"});
  }
  for (const ops::Precision mode : serve ? s.modes : std::vector<ops::Precision>{}) {
    ChildResult r = spawn(child_args(s, "serve", mode), true, "serve figure");
    for (OJson& line : r.lines) {
      line["peak_rss_gb"] = r.peak_rss_gb;
      emit(line);
      rows.push_back({std::string("serve ") + mode_name(mode) + " " +
                          std::to_string(line.value("clients", 0)) + " clients",
                      fmt(num(line, "tokens_per_second")), "tokens/s",
                      fmt(num(line, "speedup_vs_1_client")) + "x 1 client, latency p50 " +
                          fmt(num(line, "p50_latency_seconds")) + " s, p99 " +
                          fmt(num(line, "p99_latency_seconds")) + " s, " +
                          std::to_string(line.value("failed", -1)) + " of " +
                          std::to_string(line.value("requests", 0)) + " requests failed"});
    }
  }
  print_table(rows);
  return 0;
}

}  // namespace loratune::cli
