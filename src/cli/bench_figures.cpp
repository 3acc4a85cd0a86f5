#include "cli/bench_figures.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <vector>

#include "cli/precision_option.h"
#include "core/bf16_dot_rate.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "generate/generator.h"
#include "lora/adapter.h"
#include "model/transformer.h"
#include "ops/backend.h"
#include "ops/device.h"
#include "ops/ops.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace loratune::cli::bench {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Best time of `f` after one warm-up call: at least 3 and at most 20 repeats, stopping once
// half a second has been spent.
template <class F>
double best_seconds(F&& f) {
  f();
  double best = std::numeric_limits<double>::infinity(), total = 0.0;
  for (int rep = 0; rep < 20; ++rep) {
    const auto t0 = Clock::now();
    f();
    const double s = seconds_since(t0);
    best = std::min(best, s);
    total += s;
    if (rep >= 2 && total >= 0.5) break;
  }
  return std::max(best, 1e-9);
}

std::vector<float> random_floats(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(rng.uniform() - 0.5);
  return v;
}

// The Python peer's runs of the seed job (the tutorial's Trainer + PEFT code with the labels it
// lacks, padding to 512), measured once on the machine named.
struct PeerRun {
  int64_t records;
  const char* precision;
  double seconds, peak_rss_gb;
  const char* what;
  const char* where;
  const char* when;
};
constexpr const char* kPeerStack = "torch 1.13 + transformers 4.44 + PEFT 0.12, Trainer";
constexpr const char* kXeon =
    "Intel Xeon VM, 2 vCPUs, 24 GiB (AVX-512, AVX512-BF16, AMX); compare only on such a CPU";
const PeerRun kPeerRuns[] = {
    {50, "fp32", 420.6, 20.1, kPeerStack, kXeon, "reported with issue 21, 2026"},
    {50, "bf16", 265.8, 17.1, "the same with TrainingArguments(bf16=True)", kXeon,
     "reported with issue 21, 2026"},
};

// part over the steps whose times make the median (the middle one, or the mean of the middle
// two): the parts of a step then add up to at most its median time, as each step's do.
double at_median_steps(const std::vector<double>& times, const std::vector<double>& part) {
  std::vector<size_t> order(times.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return times[a] < times[b]; });
  const size_t n = order.size();
  return n % 2 ? part[order[n / 2]] : 0.5 * (part[order[n / 2 - 1]] + part[order[n / 2]]);
}

double median(const std::vector<double>& v) {
  return at_median_steps(v, v);
}

}  // namespace

TempFolder::TempFolder(const std::string& prefix) {
  const char* base = std::getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/" + prefix + "_XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data()))
    throw Error("cannot create a temporary folder", tmpl, "is TMPDIR writable?");
  path_ = buf.data();
}

TempFolder::~TempFolder() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::vector<LinearShape> linear_shapes(const ModelConfig& c) {
  const int C = c.hidden_size, HD = c.num_attention_heads * c.head_dim(), KV = c.kv_dim();
  const int F = c.intermediate_size, V = c.vocab_size;
  const LinearShape all[] = {{"q_proj", C, HD},   {"k_proj,v_proj", C, KV},
                             {"o_proj", HD, C},   {"gate_proj,up_proj", C, F},
                             {"down_proj", F, C}, {"lm_head", C, V}};
  std::vector<LinearShape> shapes;
  for (const LinearShape& s : all) {
    auto same = std::find_if(shapes.begin(), shapes.end(),
                             [&](const LinearShape& t) { return t.in == s.in && t.out == s.out; });
    if (same == shapes.end())
      shapes.push_back(s);
    else
      same->modules += "," + s.modules;
  }
  return shapes;
}

int64_t linear_parameter_count(const ModelConfig& c) {
  const int64_t C = c.hidden_size, HD = int64_t{c.num_attention_heads} * c.head_dim();
  const int64_t KV = c.kv_dim(), F = c.intermediate_size, V = c.vocab_size;
  const int64_t per_layer = C * HD + 2 * C * KV + HD * C + 3 * C * F;
  return c.num_hidden_layers * per_layer + V * C;
}

const char* const kFlopCount =
    "4*P + 6*L*H*D*T per token: P = frozen linear weights incl. lm_head (forward 2P, input "
    "gradient 2P; LoRA not counted), causal attention forward 2*L*H*D*T, backward twice that";

double train_flops_per_token(const ModelConfig& c, int T) {
  const double HD = static_cast<double>(c.num_attention_heads) * c.head_dim();
  return 4.0 * static_cast<double>(linear_parameter_count(c)) +
         6.0 * c.num_hidden_layers * HD * static_cast<double>(T);
}

std::vector<OJson> sgemm_figure(const ModelConfig& c, int M) {
  // OpenBLAS with as many threads as ours for its figures (loratune keeps it to one; setting
  // OpenBLAS's count also sets OpenMP's, so both are restored at the end).
  const int threads = num_threads();
  openblas_set_num_threads(threads);
  std::vector<OJson> lines;
  struct Peak {
    double gflops = 0.0;
    std::string shape, implementation;
  } peaks[2];  // fp32, bf16
  const ops::WeightFormat chosen = ops::choose_backend(ops::Precision::kF32).format;
  for (const LinearShape& s : linear_shapes(c)) {
    const int in = s.in, out = s.out;
    const std::vector<float> x = random_floats(static_cast<size_t>(M) * in, 1);
    const std::vector<float> w = random_floats(static_cast<size_t>(out) * in, 2);
    std::vector<float> y(static_cast<size_t>(M) * out), dx(static_cast<size_t>(M) * in);
    // y doubles as dY for the backward forms: the values do not matter for the time.
    struct Impl {
      std::string name;
      bool bf16;
      std::function<void()> run;
    };
    std::vector<Impl> impls = {
        {"blas_forward", false,
         [&] {
           cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, out, in, 1.0f, x.data(), in,
                       w.data(), in, 0.0f, y.data(), out);
         }},
        {"blas_backward", false,
         [&] {
           cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, in, out, 1.0f, y.data(), out,
                       w.data(), in, 0.0f, dx.data(), in);
         }},
    };
    // loratune's kernels through ops::linear_*, on every weight format this CPU runs, packed
    // once as at model load: own = the AVX2 kernels (own_bf16: on bf16-rounded operands),
    // onednn_f32 / onednn_bf16 = oneDNN's matmul, onednn_f32_widened = its fp32 one on bf16
    // weights widened a slice at a time; generation's forward-only own_avx512bf16 (vdpbf16ps)
    // and own_bf16_widened (the own kernels on bf16 blocks widened in registers).
    std::vector<std::unique_ptr<ops::PackedWeight>> packed;
    for (const ops::WeightFormat format : ops::available_formats()) {
      const char* name = format == ops::WeightFormat::kBlocksF32           ? "own"
                         : format == ops::WeightFormat::kRowsF32           ? "onednn_f32"
                         : format == ops::WeightFormat::kRowsBF16          ? "onednn_bf16"
                         : format == ops::WeightFormat::kRowsBF16Widened   ? "onednn_f32_widened"
                         : format == ops::WeightFormat::kGroupsBF16        ? "own_avx512bf16"
                         : format == ops::WeightFormat::kBlocksBF16Widened ? "own_bf16_widened"
                                                                           : "own_bf16";
      packed.push_back(std::make_unique<ops::PackedWeight>(w.data(), out, in, format));
      const ops::PackedWeight& pw = *packed.back();
      const bool bf16 = ops::is_bf16(format);
      impls.push_back({std::string(name) + "_forward", bf16,
                       [&] { ops::linear_forward(y.data(), x.data(), pw, nullptr, M); }});
      if (ops::has_backward(format))
        impls.push_back({std::string(name) + "_backward", bf16,
                         [&] { ops::linear_backward(dx.data(), y.data(), pw, M, false); }});
    }
    const double flops = 2.0 * M * in * static_cast<double>(out);
    OJson line = {{"figure", "sgemm"}, {"shape", s.modules}, {"m", M}, {"k", in}, {"n", out}};
    std::string fastest[2];
    double best[2] = {0.0, 0.0};
    for (const Impl& impl : impls) {
      const double gflops = flops / best_seconds(impl.run) / 1e9;
      line[impl.name + "_gflops"] = gflops;
      const int mode = impl.bf16 ? 1 : 0;
      if (gflops > best[mode]) best[mode] = gflops, fastest[mode] = impl.name;
      if (gflops > peaks[mode].gflops) peaks[mode] = {gflops, s.modules, impl.name};
    }
    // Whether the run-time choice (ops/backend.h) is this shape's fastest fp32 kernel.
    line["fastest_f32"] = fastest[0];
    line["fastest_bf16"] = fastest[1];
    line["chosen_f32"] = ops::format_name(chosen);
    line["threads"] = threads;
    lines.push_back(line);
  }
  set_num_threads(threads);
  const char* names[] = {"sgemm_peak", "bf16_peak"};
  for (int mode = 0; mode < 2; ++mode)
    lines.push_back({{"figure", names[mode]},
                     {"gflops", peaks[mode].gflops},
                     {"shape", peaks[mode].shape},
                     {"implementation", peaks[mode].implementation},
                     {"m", M},
                     {"threads", threads}});
  return lines;
}

OJson cpu_figure() {
  const CpuFeatures& f = cpu_features();
  OJson line = {
      {"figure", "cpu"},
      {"model", f.model},
      {"flags", f.flags()},
      {"bf16_hardware", f.bf16()},
      {"onednn_isa", ops::onednn_isa()},
      // The kernels OpenBLAS took for this CPU (the sgemm figure's blas columns): its generic
      // "Prescott" on CPUs newer than it knows.
      {"openblas_core", openblas_get_corename()},
      {"fp32_kernel", ops::format_name(ops::choose_backend(ops::Precision::kF32).format)},
      {"bf16_kernel", ops::format_name(ops::choose_backend(ops::Precision::kBF16).format)},
      // Generation and serving take row-invariant kernels (ops/backend.h).
      {"fp32_generation_kernel",
       ops::generation_kernel_name(
           ops::choose_backend(ops::Precision::kF32, ops::KernelUse::kRowInvariant).format)},
      {"bf16_generation_kernel",
       ops::generation_kernel_name(
           ops::choose_backend(ops::Precision::kBF16, ops::KernelUse::kRowInvariant).format)},
      // What CUDA offers; this version's figures are all the CPU's (ops/device.h).
      {"cuda", ops::describe_cuda(ops::probe_cuda())},
      {"threads", num_threads()}};
  // One thread's rates that choose the bf16 kernel (core/bf16_dot_rate.h), where measured.
  const Bf16DotRate& rate = bf16_dot_rate();
  if (rate.fma_gflops > 0) line["fp32_fma_gflops_per_thread"] = rate.fma_gflops;
  if (rate.dot_gflops > 0) line["bf16_dot_gflops_per_thread"] = rate.dot_gflops;
  return line;
}

namespace {

// A piece of memory to read.
struct Bytes {
  const void* p;
  size_t n;
};

// Reads every piece once across the team (each thread its share of every piece, one stream
// each) and returns the seconds it took. Eight independent 64-bit sums: one running sum would
// make the loop wait on the adder instead of on memory; integers, as the bytes may be anything
// (as floats some would be denormals).
double stream_read(const std::vector<Bytes>& pieces) {
  constexpr int kLanes = 8;
  const auto t0 = Clock::now();
  uint64_t total = 0;
#pragma omp parallel reduction(+ : total)
  {
    const long t = omp_get_thread_num(), nt = omp_get_num_threads();
    uint64_t acc[kLanes] = {};
    for (const Bytes& b : pieces) {
      const uint64_t* p = static_cast<const uint64_t*>(b.p);
      const long lines = static_cast<long>(b.n / sizeof(acc));
      for (long i = lines * t / nt; i < lines * (t + 1) / nt; ++i)
        for (int j = 0; j < kLanes; ++j) acc[j] += p[i * kLanes + j];
    }
    for (uint64_t a : acc) total += a;
  }
  static volatile uint64_t sink;
  sink = sink + total;
  return seconds_since(t0);
}

}  // namespace

OJson bandwidth_figure() {
  const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
  const size_t bytes = std::max<size_t>(size_t{1} << 30, l3 > 0 ? 4 * static_cast<size_t>(l3) : 0);
  std::unique_ptr<uint64_t[]> buf(new uint64_t[bytes / sizeof(uint64_t)]);
  const long n = static_cast<long>(bytes / sizeof(uint64_t));
  uint64_t* p = buf.get();
#pragma omp parallel for schedule(static)
  for (long i = 0; i < n; ++i) p[i] = i;  // first touch on the threads that read it
  const int passes = 5;
  double best = std::numeric_limits<double>::infinity();
  for (int pass = 0; pass < passes; ++pass) best = std::min(best, stream_read({{p, bytes}}));
  return {{"figure", "bandwidth"},
          {"gb_per_second", static_cast<double>(bytes) / std::max(best, 1e-9) / 1e9},
          {"buffer_bytes", bytes},
          {"passes", passes},
          {"threads", num_threads()}};
}

OJson train_figure(const std::string& model_dir, int B, int T, int steps) {
  Transformer model(model_dir);
  const ModelConfig& c = model.config();
  LoraConfig lc;  // r 8, alpha 16, dropout 0.05 on q_proj and v_proj
  LoraAdapter adapter(c, lc, 0);
  model.set_adapter(&adapter);
  std::vector<LoraParam> params = adapter.parameters();
  AdamWOptions opt;
  opt.lr = 1e-4;
  AdamW adamw(params, opt);

  // Random tokens, every position labelled.
  Rng rng(1);
  std::vector<int> tokens(static_cast<size_t>(B) * T);
  for (int& t : tokens) t = static_cast<int>(rng.next_u64() % c.vocab_size);
  std::vector<SequenceSpan> seqs;
  for (int b = 0; b < B; ++b) seqs.push_back({b * T, T, 0});
  const int64_t count = count_loss_targets(tokens, seqs);

  std::vector<double> times, product_times, attention_times;
  double loss = 0.0, product_flops = 0.0;
  for (int s = 0; s < steps; ++s) {
    ops::reset_step_totals();
    const auto t0 = Clock::now();
    adapter.zero_grad();
    LossSum l = model.forward_backward(tokens, seqs, tokens, 1.0f / static_cast<float>(count),
                                       Dropout{static_cast<float>(lc.lora_dropout), 7},
                                       TrainArgs{}.max_group_tokens);
    clip_grad_norm(params, 1.0);
    adamw.step(opt.lr);
    times.push_back(seconds_since(t0));
    const ops::StepTotals totals = ops::step_totals();
    product_times.push_back(totals.product_seconds);
    attention_times.push_back(totals.attention_seconds);
    product_flops = totals.product_flops;
    loss = l.sum / static_cast<double>(l.count);
  }
  if (steps > 1) {  // the warm-up step
    times.erase(times.begin());
    product_times.erase(product_times.begin());
    attention_times.erase(attention_times.begin());
  }
  const double sec = std::max(median(times), 1e-9);
  const double product_sec = std::max(at_median_steps(times, product_times), 1e-9);
  const double tokens_per_second = B * static_cast<double>(T) / sec;
  return {{"figure", "train"},
          {"shape", std::to_string(B) + "x" + std::to_string(T)},
          {"batch", B},
          {"seq", T},
          {"steps_timed", static_cast<int>(times.size())},
          {"seconds_per_step", sec},
          {"tokens_per_second", tokens_per_second},
          // The products with frozen weights inside the step: their seconds, and their rate
          // there (their operands meet them cold, unlike the sgemm figure's warm repeats).
          {"product_seconds_per_step", product_sec},
          {"product_gflops_in_step", product_flops / product_sec / 1e9},
          {"attention_seconds_per_step", at_median_steps(times, attention_times)},
          {"flops_per_token", train_flops_per_token(c, T)},
          {"flop_count", kFlopCount},
          {"loss", loss},
          {"lora_r", lc.r},
          {"target_modules", "q_proj,v_proj"},
          {"precision", precision_name()},
          {"kernel", ops::format_name(ops::backend().format)},
          {"threads", num_threads()}};
}

OJson seed_figure(const SeedJob& job) {
  TempFolder out("loratune_bench_seed");
  TrainArgs t;  // examples/seed.yaml over the first `records` records (data_fraction 1)
  t.model = job.model;
  t.data = {job.data};
  t.tokenizer = job.tokenizer;
  t.max_records = job.records;
  t.output_dir = out.path() + "/out";
  t.data_fraction = 1.0;
  t.eval_fraction = 0.2;
  t.template_kind = data::TemplateKind::kSeed;
  t.max_length = 512;
  t.lora = LoraConfig{};  // r 8, alpha 16, dropout 0.05, q_proj and v_proj
  t.num_train_epochs = 1;
  t.per_device_train_batch_size = 4;
  t.per_device_eval_batch_size = 4;
  t.learning_rate = 5e-5;
  t.eval_strategy = IntervalStrategy::kEpoch;
  t.save_strategy = IntervalStrategy::kEpoch;
  t.load_best_model_at_end = true;
  t.logging_steps = 25;  // sparse progress on stderr
  t.threads = job.threads;
  t.progress_bar = false;
  const Json args_json = {{"data_fraction", 1.0},
                          {"eval_fraction", 0.2},
                          {"template", "seed"},
                          {"max_length", 512},
                          {"lora_r", 8},
                          {"lora_alpha", 16},
                          {"lora_dropout", 0.05},
                          {"target_modules", "q_proj,v_proj"},
                          {"num_train_epochs", 1},
                          {"per_device_train_batch_size", 4},
                          {"learning_rate", 5e-5},
                          {"eval_strategy", "epoch"},
                          {"save_strategy", "epoch"},
                          {"load_best_model_at_end", true},
                          {"logging_steps", 25},
                          {"max_records", job.records}};
  std::fprintf(stderr, "bench: seed job on the first %lld records of %s\n",
               static_cast<long long>(job.records), job.data.c_str());
  TrainSummary sum;
  const auto t0 = Clock::now();
  if (run_training(t, args_json, &sum) != 0) throw Error("the seed job was interrupted", job.data);
  const double wall = std::max(seconds_since(t0), 1e-9);
  OJson line = {{"figure", "seed"},
                {"records", job.records},
                {"precision", precision_name()},
                {"wall_seconds", wall},
                {"train_seconds", sum.train_seconds},
                {"eval_seconds", sum.eval_seconds},
                {"train_examples", sum.train_examples},
                {"eval_examples", sum.eval_examples},
                {"train_tokens", sum.train_tokens},
                {"steps", sum.steps},
                {"eval_batches", sum.eval_batches},
                {"tokens_per_second",
                 static_cast<double>(sum.train_tokens) / std::max(sum.train_seconds, 1e-9)},
                {"eval_loss", sum.last_eval_loss},
                {"threads", num_threads()}};
  // The peer's own run of this job in this precision, where one was measured: its figure
  // with where and when, never a ratio (the peer ran on its machine, not in this run).
  for (const PeerRun& p : kPeerRuns)
    if (p.records == job.records && precision_name() == std::string(p.precision))
      line["peer"] = {{"wall_seconds", p.seconds},
                      {"peak_rss_gb", p.peak_rss_gb},
                      {"what", p.what},
                      {"where", p.where},
                      {"when", p.when}};
  return line;
}

OJson generate_figure(const std::string& model_dir, int prompt_tokens, int new_tokens) {
  Transformer model(model_dir);
  // Bytes a weight takes in memory (the emulated bf16 format holds fp32).
  const int64_t weight_bytes = ops::holds_bf16(ops::backend().format) ? 2 : 4;
  const ModelConfig& c = model.config();
  // The matrices that decode reads, as they lie in memory: between chunks of decode steps
  // they are read once more, plainly, which measures the bandwidth they are read at in the
  // same minute (this host's bandwidth moves by 2x within an hour).
  std::vector<Bytes> matrices;
  size_t matrix_bytes = 0;
  const auto add = [&](const ops::PackedWeight& w) {
    matrices.push_back({w.memory(), w.bytes()});
    matrix_bytes += w.bytes();
  };
  for (const LayerWeights& l : model.weights().layers)
    for (const ops::PackedWeight* w : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      add(*w);
  add(model.weights().lm_head);
  Rng rng(3);
  std::vector<int> prompt(prompt_tokens);
  for (int& t : prompt) t = static_cast<int>(rng.next_u64() % c.vocab_size);
  GenerateOptions opt;  // greedy, no eos: always the full count
  opt.max_new_tokens = 1;
  // Warm-up: every weight page touched once before timing.
  generate(model, std::vector<int>(prompt.begin(), prompt.begin() + std::min(prompt_tokens, 8)),
           opt);
  // The prefill chooses the first new token; then `new_tokens` decode steps choose the others,
  // timed in chunks of kChunk steps with a plain read of the matrices before each chunk and
  // after the last.
  constexpr int kChunk = 16;
  opt.max_new_tokens = new_tokens + 1;
  int produced = 0;
  double prefill = 0.0, decode = 0.0;
  std::vector<double> chunk_seconds, read_gbps;
  const auto read_matrices = [&] {
    read_gbps.push_back(static_cast<double>(matrix_bytes) / stream_read(matrices) / 1e9);
  };
  const auto t0 = Clock::now();
  Clock::time_point chunk_start;
  generate(model, prompt, opt, [&](int) {
    const double s = seconds_since(produced == 0 ? t0 : chunk_start);
    if (produced++ == 0) {
      prefill = s;
    } else {
      chunk_seconds.back() += s;
      decode += s;
    }
    if (produced == 1 || (produced - 1) % kChunk == 0) {
      read_matrices();
      if (produced <= new_tokens) chunk_seconds.push_back(0.0);
    }
    chunk_start = Clock::now();
  });
  if (new_tokens % kChunk != 0) read_matrices();
  // Each chunk's decode rate against the bound of the mean of the reads before and after it.
  const double bytes_per_token = static_cast<double>(linear_parameter_count(c) * weight_bytes);
  std::vector<double> fractions;
  for (size_t i = 0; i < chunk_seconds.size(); ++i) {
    const int steps = std::min(kChunk, new_tokens - static_cast<int>(i) * kChunk);
    const double bound = 0.5 * (read_gbps[i] + read_gbps[i + 1]) * 1e9 / bytes_per_token;
    fractions.push_back(steps / std::max(chunk_seconds[i], 1e-9) / bound);
  }
  const auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty()      ? 0.0
           : v.size() % 2 ? v[v.size() / 2]
                          : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  };
  prefill = std::max(prefill, 1e-9);
  decode = std::max(decode, 1e-9);
  return {{"figure", "generate"},
          {"prompt_tokens", prompt_tokens},
          {"new_tokens", new_tokens},
          {"prefill_seconds", prefill},
          {"prefill_tokens_per_second", prompt_tokens / prefill},
          {"decode_seconds", decode},
          {"decode_tokens_per_second", new_tokens / decode},
          {"weight_bytes_per_token", bytes_per_token},
          {"matrix_read_gb_per_second", median(read_gbps)},
          {"matrix_reads", read_gbps.size()},
          {"fraction_of_read_bound", median(fractions)},
          {"precision", precision_name()},
          {"kernel", ops::generation_kernel_name(ops::backend().format)},
          {"threads", num_threads()}};
}

}  // namespace loratune::cli::bench
