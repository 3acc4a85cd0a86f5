#include "train/trainer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "model/init_model.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/loss_plot.h"

namespace loratune {

namespace {

std::atomic<bool> g_stop_requested{false};
void request_stop(int) {
  g_stop_requested = true;
}

// SIGINT/SIGTERM finish the current step; restored when the trainer returns.
class StopSignals {
 public:
  StopSignals() {
    g_stop_requested = false;
    old_int_ = std::signal(SIGINT, request_stop);
    old_term_ = std::signal(SIGTERM, request_stop);
  }
  ~StopSignals() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }

 private:
  void (*old_int_)(int);
  void (*old_term_)(int);
};

struct PackedBatch {
  std::vector<int> tokens, labels;
  std::vector<SequenceSpan> seqs;
};

PackedBatch pack(const std::vector<data::TokenizedExample>& examples, const std::vector<int>& idx) {
  PackedBatch b;
  for (int i : idx) {
    const auto& ex = examples[i];
    b.seqs.push_back({static_cast<int>(b.tokens.size()), static_cast<int>(ex.ids.size()), 0});
    b.tokens.insert(b.tokens.end(), ex.ids.begin(), ex.ids.end());
    b.labels.insert(b.labels.end(), ex.labels.begin(), ex.labels.end());
  }
  return b;
}

uint64_t mix_seed(uint64_t seed, uint64_t a, uint64_t b) {
  Rng rng(seed ^ (a * 0x9e3779b97f4a7c15ull) ^ (b * 0xc2b2ae3d27d4eb4full));
  return rng.next_u64();
}

bool dir_is_empty(const std::string& dir) {
  return list_checkpoints(dir).empty() && !file_exists(dir + "/trainer_log.jsonl") &&
         !dir_exists(dir + "/final_model");
}

std::string format_duration(double seconds) {
  const long s = static_cast<long>(seconds + 0.5);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

// Writes records to OUTPUT_DIR/trainer_log.jsonl and prints them. A resumed run appends; a
// fresh one (also over an old run with --overwrite-output-dir) starts the log anew.
class Logger {
 public:
  Logger(const std::string& path, bool append, bool progress_bar)
      : out_(path, append ? std::ios::app : std::ios::trunc), tty_(progress_bar && isatty(2)) {
    if (!out_)
      throw Error("cannot write the training log", path, "is the output directory writable?");
  }
  void record(const Json& j) {
    out_ << j.dump() << "\n";
    out_.flush();
    if (!out_)
      throw Error("writing the training log failed", "trainer_log.jsonl", "is the disk full?");
    if (tty_) std::fputs("\r\033[K", stderr);
    std::fprintf(stderr, "%s\n", j.dump().c_str());
  }
  void progress(int64_t step, int64_t total, double loss, double lr, double tokens_per_s,
                double eta_s) {
    if (!tty_) return;
    const int width = 24;
    const int filled =
        static_cast<int>(width * static_cast<double>(step) / std::max<int64_t>(1, total));
    std::string bar(filled, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r\033[K[%s] step %lld/%lld  loss %.4f  lr %.2e  %.0f tok/s  ETA %s",
                 bar.c_str(), static_cast<long long>(step), static_cast<long long>(total), loss, lr,
                 tokens_per_s, format_duration(eta_s).c_str());
    std::fflush(stderr);
  }

 private:
  std::ofstream out_;
  bool tty_;
};

}  // namespace

EvalResult evaluate(Transformer& model, const std::vector<data::TokenizedExample>& examples,
                    int batch_size, int max_group_tokens) {
  LossSum total;
  for (const auto& idx : data::make_batches(examples.size(), batch_size, false, 0, 0)) {
    PackedBatch b = pack(examples, idx);
    LossSum part = model.loss(b.tokens, b.seqs, b.labels, max_group_tokens);
    total.sum += part.sum;
    total.count += part.count;
  }
  EvalResult r;
  r.tokens = total.count;
  r.loss = total.count ? total.sum / static_cast<double>(total.count) : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

int run_training(const TrainArgs& args, const Json& args_json, TrainSummary* summary) {
  args.validate();
  set_num_threads(args.threads);
  const std::string out = args.output_dir;
  if (dir_exists(out) && !dir_is_empty(out) && args.resume_from_checkpoint.empty() &&
      !args.overwrite_output_dir)
    throw UsageError("output directory is not empty", out,
                     "use --resume-from-checkpoint latest to continue, or --overwrite-output-dir");
  make_dirs(out);
  // Opened first: fails early on a read-only directory.
  Logger logger(out + "/trainer_log.jsonl", !args.resume_from_checkpoint.empty(),
                args.progress_bar);

  // Data: the seed recipe's order of operations (read, fraction, split, tokenize).
  Transformer model(args.model);
  tokenizer::Tokenizer tok =
      tokenizer::Tokenizer::load(args.tokenizer.empty() ? args.model : args.tokenizer);
  data::ReadStats read_stats;
  std::vector<data::Record> records;
  for (const std::string& path : args.data) {
    auto part = data::read_records(path, args.skip_bad_records, &read_stats);
    records.insert(records.end(), part.begin(), part.end());
  }
  if (args.max_records > 0 && static_cast<int64_t>(records.size()) > args.max_records)
    records.resize(static_cast<size_t>(args.max_records));
  data::SplitOptions split_opt;
  split_opt.data_fraction = args.data_fraction;
  split_opt.eval_fraction = args.eval_data.empty() ? args.eval_fraction : 0.0;
  split_opt.shuffle = args.shuffle;
  split_opt.seed = args.seed;
  data::Split split = data::split_records(std::move(records), split_opt);
  for (const std::string& path : args.eval_data) {
    auto part = data::read_records(path, args.skip_bad_records, &read_stats);
    split.eval.insert(split.eval.end(), part.begin(), part.end());
  }
  data::TokenizeOptions tok_opt;
  tok_opt.kind = args.template_kind;
  tok_opt.max_length = args.max_length;
  tok_opt.train_on_prompt = args.train_on_prompt;
  data::TokenizeStats tok_stats;
  const auto train = data::tokenize_records(split.train, tok, tok_opt, &tok_stats);
  const auto eval = data::tokenize_records(split.eval, tok, tok_opt, &tok_stats);
  if (train.empty())
    throw Error("no training examples left", args.data[0],
                "check --data-fraction, --eval-fraction and the records' answers");
  std::fprintf(stderr,
               "data: %zu train / %zu eval examples (%lld records read, %lld malformed skipped, "
               "%lld without answer skipped, %lld truncated to %d tokens, %lld dropped)\n",
               train.size(), eval.size(), static_cast<long long>(read_stats.records),
               static_cast<long long>(read_stats.skipped_bad),
               static_cast<long long>(read_stats.skipped_empty),
               static_cast<long long>(tok_stats.truncated), args.max_length,
               static_cast<long long>(tok_stats.dropped_no_answer));

  LoraConfig lora_config = args.lora;
  lora_config.base_model_name_or_path = args.model;
  LoraAdapter adapter(model.config(), lora_config, args.seed);
  model.set_adapter(&adapter);
  std::vector<LoraParam> params = adapter.parameters();
  AdamWOptions adam;
  adam.lr = args.learning_rate;
  adam.weight_decay = args.weight_decay;
  AdamW optimizer(params, adam);

  const int B = args.per_device_train_batch_size, accum = args.gradient_accumulation_steps;
  const int64_t batches_per_epoch = (static_cast<int64_t>(train.size()) + B - 1) / B;
  const int64_t steps_per_epoch = (batches_per_epoch + accum - 1) / accum;
  const int64_t total_steps =
      args.max_steps > 0 ? args.max_steps
                         : static_cast<int64_t>(std::ceil(args.num_train_epochs * steps_per_epoch));
  const int64_t warmup = args.warmup_steps > 0
                             ? args.warmup_steps
                             : static_cast<int64_t>(std::ceil(args.warmup_ratio * total_steps));
  const int64_t eval_every = args.eval_steps > 0 ? args.eval_steps : args.logging_steps;

  TrainerState state;
  state.max_steps = total_steps;
  state.seed = args.seed;
  if (!args.resume_from_checkpoint.empty()) {
    std::string dir = args.resume_from_checkpoint;
    if (dir == "latest") {
      auto all = list_checkpoints(out);
      if (all.empty())
        throw UsageError("no checkpoint to resume from", out,
                         "train without --resume-from-checkpoint");
      dir = all.back().second;
    }
    state = load_checkpoint(dir, adapter, optimizer);
    state.max_steps = total_steps;
    std::fprintf(stderr, "resumed from %s at step %lld\n", dir.c_str(),
                 static_cast<long long>(state.global_step));
  }

  StopSignals signals;
  double log_loss_sum = 0.0;
  int64_t log_steps = 0;
  double last_lr = 0.0, last_norm = 0.0;
  const auto start = std::chrono::steady_clock::now();
  int64_t start_step = state.global_step;
  std::string last_saved;
  bool stopped = false;
  int64_t batches_epoch = -1;  // the epoch `batches` was drawn for
  std::vector<std::vector<int>> batches;
  TrainSummary done;
  done.train_examples = static_cast<int64_t>(train.size());
  done.eval_examples = static_cast<int64_t>(eval.size());
  auto seconds_since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  while (state.global_step < total_steps) {
    const auto step_start = std::chrono::steady_clock::now();
    const int64_t epoch = state.global_step / steps_per_epoch;
    const int64_t window = state.global_step % steps_per_epoch;
    if (epoch != batches_epoch) {
      batches = data::make_batches(train.size(), B, true, args.seed, static_cast<int>(epoch));
      batches_epoch = epoch;
    }
    const int64_t first = window * accum;
    const int64_t last = std::min<int64_t>(first + accum, static_cast<int64_t>(batches.size()));
    std::vector<PackedBatch> packed;
    int64_t count = 0;
    for (int64_t i = first; i < last; ++i) {
      packed.push_back(pack(train, batches[i]));
      count += count_loss_targets(packed.back().labels, packed.back().seqs);
    }
    adapter.zero_grad();
    LossSum step_loss;
    for (size_t i = 0; i < packed.size() && count > 0; ++i) {
      Dropout dropout{static_cast<float>(args.lora.lora_dropout),
                      mix_seed(args.seed, static_cast<uint64_t>(state.global_step), i)};
      LossSum part =
          model.forward_backward(packed[i].tokens, packed[i].seqs, packed[i].labels,
                                 1.0f / static_cast<float>(count), dropout, args.max_group_tokens);
      step_loss.sum += part.sum;
      step_loss.count += part.count;
    }
    last_norm = clip_grad_norm(params, args.max_grad_norm);
    last_lr = scheduled_lr(args.lr_scheduler_type, args.learning_rate, state.global_step,
                           total_steps, warmup);
    optimizer.step(last_lr);
    done.train_seconds += seconds_since(step_start);
    ++done.steps;
    for (const auto& p : packed) done.train_tokens += static_cast<int64_t>(p.tokens.size());
    const double elapsed = seconds_since(start);
    const double tokens_per_second =
        static_cast<double>(done.train_tokens) / std::max(1e-9, elapsed);
    ++state.global_step;
    state.epoch = static_cast<double>(state.global_step) / static_cast<double>(steps_per_epoch);
    const double loss =
        step_loss.count ? step_loss.sum / static_cast<double>(step_loss.count) : 0.0;
    log_loss_sum += loss;
    ++log_steps;

    const double per_step = elapsed / static_cast<double>(state.global_step - start_step);
    logger.progress(state.global_step, total_steps, loss, last_lr, tokens_per_second,
                    per_step * static_cast<double>(total_steps - state.global_step));
    const bool final_step = state.global_step == total_steps;
    // Stopping mid-epoch (--max-steps) ends that epoch too, as in HF's loop.
    const bool epoch_end = state.global_step % steps_per_epoch == 0 || final_step;
    if (state.global_step % args.logging_steps == 0 || final_step) {
      Json rec = {{"step", state.global_step},        {"epoch", state.epoch},
                  {"loss", log_loss_sum / log_steps}, {"grad_norm", last_norm},
                  {"learning_rate", last_lr},         {"tokens_per_second", tokens_per_second}};
      state.log_history.push_back(rec);
      logger.record(rec);
      log_loss_sum = 0.0;
      log_steps = 0;
    }
    const bool do_eval =
        !eval.empty() &&
        ((args.eval_strategy == IntervalStrategy::kSteps && state.global_step % eval_every == 0) ||
         (args.eval_strategy == IntervalStrategy::kEpoch && epoch_end));
    std::optional<double> metric;
    if (do_eval) {
      const auto eval_start = std::chrono::steady_clock::now();
      EvalResult r = evaluate(model, eval, args.per_device_eval_batch_size, args.max_group_tokens);
      done.eval_seconds += seconds_since(eval_start);
      done.eval_batches += (done.eval_examples + args.per_device_eval_batch_size - 1) /
                           args.per_device_eval_batch_size;
      done.last_eval_loss = r.loss;
      Json rec = {{"step", state.global_step},
                  {"epoch", state.epoch},
                  {"eval_loss", r.loss},
                  {"eval_perplexity", r.perplexity},
                  {"eval_tokens", r.tokens}};
      state.log_history.push_back(rec);
      logger.record(rec);
      metric = r.loss;
    }
    const bool do_save = (args.save_strategy == IntervalStrategy::kSteps &&
                          state.global_step % args.save_steps == 0) ||
                         (args.save_strategy == IntervalStrategy::kEpoch && epoch_end);
    stopped = g_stop_requested.load();
    if (do_save || stopped) {
      const std::string dir = checkpoint_dir(out, state.global_step);
      if (metric && (!state.best_metric || *metric < *state.best_metric)) {
        state.best_metric = metric;
        state.best_model_checkpoint = dir;
      }
      last_saved = save_checkpoint(out, adapter, optimizer, state, last_lr, args_json);
      rotate_checkpoints(out, args.save_total_limit, state.best_model_checkpoint);
    }
    if (stopped) break;
  }
  if (summary) *summary = done;
  write_loss_plot(out + "/loss.svg", state.log_history);
  if (stopped) {
    std::fprintf(stderr,
                 "\nstopped at step %lld; checkpoint %s written. Resume with: loratune train ... "
                 "--output-dir %s --resume-from-checkpoint latest\n",
                 static_cast<long long>(state.global_step), last_saved.c_str(), out.c_str());
    return 130;
  }
  if (args.load_best_model_at_end && !state.best_model_checkpoint.empty()) {
    adapter = LoraAdapter::load(state.best_model_checkpoint, model.config());
    std::fprintf(stderr, "loaded the best model: %s (eval_loss %.6f)\n",
                 state.best_model_checkpoint.c_str(), *state.best_metric);
  }
  const std::string final_dir = args.final_dir.empty() ? out + "/final_model" : args.final_dir;
  adapter.save(final_dir);
  write_file_atomic(out + "/trainer_state.json", trainer_state_to_json(state).dump(2) + "\n");
  std::fprintf(stderr, "adapter saved to %s\n", final_dir.c_str());
  return 0;
}

}  // namespace loratune
