#include "train/trainer.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "core/error.h"
#include "core/rng.h"
#include "core/stop_signals.h"
#include "core/threads.h"
#include "data/template.h"
#include "dist/world.h"
#include "io/atomic_file.h"
#include "model/init_model.h"
#include "tokenizer/tokenizer.h"
#include "train/checkpoint.h"
#include "train/loss_plot.h"

namespace loratune {

namespace {

std::atomic<bool> g_stop_requested{false};

// SIGINT/SIGTERM finish the current step.
class StopSignals {
 public:
  StopSignals() : listener_([](int) { g_stop_requested = true; }) { g_stop_requested = false; }

 private:
  StopSignalListener listener_;
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

// This rank's share of one global batch (per-device batch B on each of the ranks): rank r
// packs examples [r·B, (r+1)·B) of it (a short last batch leaves later ranks less, or
// nothing); token_offset is where they start in the whole batch's packing, so that their
// dropout masks are the single-process run's.
struct RankShare {
  PackedBatch batch;
  int64_t token_offset = 0;
};

RankShare rank_share(const std::vector<data::TokenizedExample>& examples,
                     const std::vector<int>& idx, int B, int rank) {
  const size_t lo = std::min(idx.size(), static_cast<size_t>(rank) * B);
  const size_t hi = std::min(idx.size(), lo + B);
  RankShare share;
  for (size_t k = 0; k < lo; ++k)
    share.token_offset += static_cast<int64_t>(examples[idx[k]].ids.size());
  share.batch = pack(examples, std::vector<int>(idx.begin() + lo, idx.begin() + hi));
  return share;
}

// The ranks' LoRA gradients summed, the same on every rank (one buffer of all parameters).
void sum_gradients(const std::vector<LoraParam>& params, std::vector<float>& buffer) {
  if (dist::world().size == 1) return;
  buffer.clear();
  for (const LoraParam& p : params) buffer.insert(buffer.end(), p.grad, p.grad + p.size);
  dist::sum_in_rank_order(buffer.data(), buffer.size());
  size_t at = 0;
  for (const LoraParam& p : params) {
    std::copy_n(buffer.data() + at, p.size, p.grad);
    at += p.size;
  }
}

// Rank 0's resumed checkpoint on every rank: weights, optimizer moments and trainer state.
void share_resumed_state(TrainerState& state, const std::vector<LoraParam>& params,
                         AdamW& optimizer) {
  if (dist::world().size == 1) return;
  std::string text = dist::world().rank == 0 ? Json{{"state", trainer_state_to_json(state)},
                                                    {"optimizer_steps", optimizer.step_count()}}
                                                   .dump()
                                             : std::string();
  dist::broadcast(text);
  const Json j = Json::parse(text);
  state = trainer_state_from_json(j["state"], "rank 0's checkpoint");
  optimizer.set_step_count(j["optimizer_steps"].get<int64_t>());
  for (size_t i = 0; i < params.size(); ++i) {
    dist::broadcast(params[i].value, params[i].size);
    dist::broadcast(optimizer.exp_avg(i).data(), optimizer.exp_avg(i).size());
    dist::broadcast(optimizer.exp_avg_sq(i).data(), optimizer.exp_avg_sq(i).size());
  }
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
  // A disabled logger (every rank but 0) writes and prints nothing.
  Logger(const std::string& path, bool append, bool progress_bar, bool enabled)
      : enabled_(enabled), tty_(enabled && progress_bar && isatty(2)) {
    if (!enabled_) return;
    out_.open(path, append ? std::ios::app : std::ios::trunc);
    if (!out_)
      throw Error("cannot write the training log", path, "is the output directory writable?");
  }
  void record(const Json& j) {
    if (!enabled_) return;
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
  bool enabled_;
  std::ofstream out_;
  bool tty_;
};

}  // namespace

EvalResult evaluate(Transformer& model, const std::vector<data::TokenizedExample>& examples,
                    int batch_size, int max_group_tokens) {
  // Under mpirun the batches are dealt out to the ranks in turn and their sums added up.
  const dist::World& world = dist::world();
  double total[2] = {0.0, 0.0};  // loss sum, labelled positions
  const auto batches = data::make_batches(examples.size(), batch_size, false, 0, 0);
  for (size_t j = world.rank; j < batches.size(); j += world.size) {
    PackedBatch b = pack(examples, batches[j]);
    LossSum part = model.loss(b.tokens, b.seqs, b.labels, max_group_tokens);
    total[0] += part.sum;
    total[1] += static_cast<double>(part.count);
  }
  dist::sum_in_rank_order(total, 2);
  EvalResult r;
  r.tokens = static_cast<int64_t>(total[1]);
  r.loss = r.tokens ? total[0] / total[1] : 0.0;
  r.perplexity = std::exp(r.loss);
  return r;
}

int run_training(const TrainArgs& args, const Json& args_json, TrainSummary* summary) {
  args.validate();
  // Under mpirun every rank trains on its share of each global batch; rank 0 ("lead") alone
  // touches the output directory.
  const dist::World& world = dist::world();
  const bool lead = world.rank == 0;
  set_num_threads(args.threads > 0 || std::getenv("OMP_NUM_THREADS") ? args.threads
                                                                     : dist::default_threads());
  const std::string out = args.output_dir;
  if (lead && dir_exists(out) && !dir_is_empty(out) && args.resume_from_checkpoint.empty() &&
      !args.overwrite_output_dir)
    throw UsageError("output directory is not empty", out,
                     "use --resume-from-checkpoint latest to continue, or --overwrite-output-dir");
  if (lead) make_dirs(out);
  // Opened first: fails early on a read-only directory.
  Logger logger(out + "/trainer_log.jsonl", !args.resume_from_checkpoint.empty(), args.progress_bar,
                lead);

  // Data: the seed recipe's order of operations (read, fraction, split, tokenize).
  // Ranks on one host share the weights' file pages instead of holding a copy each.
  Transformer model(args.model, world.local_size > 1);
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
  if (lead)
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

  // HF's global batch: per_device_train_batch_size × ranks, × accumulation per step; its
  // examples are the single-process run's with that batch size, so results do not depend on
  // the number of ranks.
  const int B = args.per_device_train_batch_size, accum = args.gradient_accumulation_steps;
  const int global_B = B * world.size;
  if (lead && world.size > 1) {
    size_t floats = 0;
    for (const LoraParam& p : params) floats += p.size;
    // Each step every rank sends its gradients and receives the others' (an allgather, so
    // that each rank adds them up in rank order).
    std::fprintf(stderr,
                 "mpi: %d ranks x %d threads, global batch %d x %d accumulation; per step "
                 "each rank sends %zu gradient values (%.2f MB) and receives %.2f MB\n",
                 world.size, num_threads(), global_B, accum, floats, floats * 4e-6,
                 floats * 4e-6 * (world.size - 1));
  }
  const int64_t batches_per_epoch = (static_cast<int64_t>(train.size()) + global_B - 1) / global_B;
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
    if (lead) {
      std::string dir = args.resume_from_checkpoint;
      if (dir == "latest") {
        auto all = list_checkpoints(out);
        if (all.empty())
          throw UsageError("no checkpoint to resume from", out,
                           "train without --resume-from-checkpoint");
        dir = all.back().second;
      }
      state = load_checkpoint(dir, adapter, optimizer);
      std::fprintf(stderr, "resumed from %s at step %lld\n", dir.c_str(),
                   static_cast<long long>(state.global_step));
    }
    share_resumed_state(state, params, optimizer);
    state.max_steps = total_steps;
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
  std::vector<float> grad_buffer;  // the gradients of all parameters, summed across ranks
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
      batches =
          data::make_batches(train.size(), global_B, true, args.seed, static_cast<int>(epoch));
      batches_epoch = epoch;
    }
    const int64_t first = window * accum;
    const int64_t last = std::min<int64_t>(first + accum, static_cast<int64_t>(batches.size()));
    // Every rank knows the whole step's examples: the labelled count that normalises the
    // loss, and the tokens trained, are the global batch's without a message.
    std::vector<RankShare> shares;
    int64_t count = 0, step_tokens = 0;
    for (int64_t i = first; i < last; ++i) {
      shares.push_back(rank_share(train, batches[i], B, world.rank));
      for (int e : batches[i]) {
        const data::TokenizedExample& ex = train[e];
        const int n = static_cast<int>(ex.ids.size());
        count += count_loss_targets(ex.labels, {{0, n, 0}});
        step_tokens += n;
      }
    }
    adapter.zero_grad();
    double step_loss[2] = {0.0, 0.0};  // loss sum, labelled positions
    for (size_t i = 0; i < shares.size() && count > 0; ++i) {
      const PackedBatch& b = shares[i].batch;
      if (b.tokens.empty()) continue;
      Dropout dropout{static_cast<float>(args.lora.lora_dropout),
                      mix_seed(args.seed, static_cast<uint64_t>(state.global_step), i),
                      shares[i].token_offset};
      LossSum part =
          model.forward_backward(b.tokens, b.seqs, b.labels, 1.0f / static_cast<float>(count),
                                 dropout, args.max_group_tokens);
      step_loss[0] += part.sum;
      step_loss[1] += static_cast<double>(part.count);
    }
    sum_gradients(params, grad_buffer);
    dist::sum_in_rank_order(step_loss, 2);
    last_norm = clip_grad_norm(params, args.max_grad_norm);
    last_lr = scheduled_lr(args.lr_scheduler_type, args.learning_rate, state.global_step,
                           total_steps, warmup);
    optimizer.step(last_lr);
    done.train_seconds += seconds_since(step_start);
    ++done.steps;
    done.train_tokens += step_tokens;
    const double elapsed = seconds_since(start);
    const double tokens_per_second =
        static_cast<double>(done.train_tokens) / std::max(1e-9, elapsed);
    ++state.global_step;
    state.epoch = static_cast<double>(state.global_step) / static_cast<double>(steps_per_epoch);
    const double loss = step_loss[1] > 0 ? step_loss[0] / step_loss[1] : 0.0;
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
    // A signal to any rank stops them all after the same step.
    stopped = dist::any(g_stop_requested.load());
    if (do_save || stopped) {
      const std::string dir = checkpoint_dir(out, state.global_step);
      if (metric && (!state.best_metric || *metric < *state.best_metric)) {
        state.best_metric = metric;
        state.best_model_checkpoint = dir;
      }
      if (lead) {
        last_saved = save_checkpoint(out, adapter, optimizer, state, last_lr, args_json);
        rotate_checkpoints(out, args.save_total_limit, state.best_model_checkpoint);
      }
    }
    if (stopped) break;
  }
  if (summary) *summary = done;
  if (!lead) return stopped ? 130 : 0;
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
  data::write_adapter_template(final_dir, args.template_kind);
  write_file_atomic(out + "/trainer_state.json", trainer_state_to_json(state).dump(2) + "\n");
  std::fprintf(stderr, "adapter saved to %s\n", final_dir.c_str());
  return 0;
}

}  // namespace loratune
