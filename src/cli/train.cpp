// loratune train: the seed recipe (and the rest of HF Trainer + PEFT LoRA) as one command.
#include "cli/commands.h"
#include "cli/device_option.h"
#include "cli/options.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "dist/world.h"
#include "train/trainer.h"

namespace loratune::cli {

namespace {

const CommandSpec kSpec = {
    "train",
    "[--config FILE.yaml|.json] --model DIR --data FILE [--data FILE...] --output-dir DIR "
    "[options]",
    "Fine-tunes a LoRA adapter on instruction data with Hugging Face Trainer semantics, writing\n"
    "checkpoints to OUTPUT_DIR/checkpoint-STEP/, the log to OUTPUT_DIR/trainer_log.jsonl, the\n"
    "loss curve to OUTPUT_DIR/loss.svg and the final adapter to --final-dir. Options take HF\n"
    "TrainingArguments / PEFT LoraConfig names; a config file can set any of them (keys like\n"
    "learning_rate) and the command line overrides it.",
    {
        {"--config", "FILE", "YAML or JSON file with option values"},
        {"--model", "DIR", "Hugging Face Qwen2 model folder (with tokenizer files)"},
        {"--data", "FILE", "training data, JSON array or JSONL (alpaca or chat records)", "", true},
        {"--eval-data", "FILE", "evaluation data (instead of splitting --eval-fraction off)", "",
         true},
        {"--output-dir", "DIR", "where checkpoints, logs and the final adapter go"},
        {"--final-dir", "DIR", "where the final adapter goes", "OUTPUT_DIR/final_model"},
        {"--overwrite-output-dir", "", "allow a non-empty output directory"},
        {"--resume-from-checkpoint", "DIR|latest", "continue from a checkpoint"},
        {"--num-train-epochs", "X", "epochs (may be fractional)", "3"},
        {"--max-steps", "N", "optimizer steps; overrides --num-train-epochs when > 0", "-1"},
        {"--per-device-train-batch-size", "N", "examples per batch", "8"},
        {"--per-device-eval-batch-size", "N", "examples per eval batch", "8"},
        {"--gradient-accumulation-steps", "N", "batches per optimizer step", "1"},
        {"--learning-rate", "X", "peak learning rate", "5e-5"},
        {"--lr-scheduler-type", "NAME", "linear, cosine or constant", "linear"},
        {"--warmup-steps", "N", "linear warmup steps", "0"},
        {"--warmup-ratio", "X", "warmup as a fraction of all steps", "0"},
        {"--weight-decay", "X", "AdamW decoupled weight decay", "0"},
        {"--max-grad-norm", "X", "clip the global gradient norm (0: off)", "1.0"},
        {"--seed", "S", "seed for LoRA init, shuffling and dropout", "42"},
        {"--logging-steps", "N", "log every N steps", "10"},
        {"--eval-strategy", "no|steps|epoch", "when to evaluate", "no"},
        {"--eval-steps", "N", "evaluate every N steps", "logging steps"},
        {"--save-strategy", "no|steps|epoch", "when to write a checkpoint", "steps"},
        {"--save-steps", "N", "checkpoint every N steps", "500"},
        {"--save-total-limit", "N", "keep at most N checkpoints (never the best; 0: all)", "0"},
        {"--load-best-model-at-end", "", "final adapter = the checkpoint with the best metric"},
        {"--metric-for-best-model", "NAME", "eval_loss (lower is better)", "eval_loss"},
        {"--lora-r", "N", "LoRA rank", "8"},
        {"--lora-alpha", "X", "LoRA alpha (scale alpha/r)", "16"},
        {"--lora-dropout", "P", "dropout on the LoRA branch input", "0.05"},
        {"--target-modules", "LIST",
         "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj or all-linear", "q_proj,v_proj"},
        {"--use-rslora", "", "scale alpha/sqrt(r)"},
        {"--max-length", "N", "truncate examples to N tokens", "512"},
        {"--template", "NAME", "seed, alpaca, chatml or llama3", "seed"},
        {"--data-fraction", "X", "use the first fraction of the data", "1.0"},
        {"--eval-fraction", "X", "the last fraction of that is eval data", "0.2"},
        {"--shuffle", "", "shuffle the records (with --seed) before taking fractions"},
        {"--train-on-prompt", "",
         "loss on the prompt too (the seed's behaviour), not only the answer"},
        {"--skip-bad-records", "", "skip and count malformed records instead of stopping"},
        {"--max-group-tokens", "N", "tokens per forward/backward pass (bounds memory)", "512"},
        {"--threads", "N", "threads", "all cores"},
        bf16_option("auto"),
        device_option(),
    }};

int to_int(const ParsedArgs& a, const char* name, long long fallback) {
  const long long v = a.integer(name, fallback);
  if (v < -1 || v > (1ll << 31) - 1) throw UsageError(std::string(name) + " is out of range");
  return static_cast<int>(v);
}

}  // namespace

int run_train(const Args& args) {
  ParsedArgs a = parse_args_with_config(kSpec, args);
  TrainArgs t;
  t.model = a.required("--model");
  t.data = a.all("--data");
  t.eval_data = a.all("--eval-data");
  t.output_dir = a.required("--output-dir");
  t.final_dir = a.str("--final-dir");
  t.overwrite_output_dir = a.flag("--overwrite-output-dir");
  t.resume_from_checkpoint = a.str("--resume-from-checkpoint");
  t.num_train_epochs = a.number("--num-train-epochs", t.num_train_epochs);
  t.max_steps = a.integer("--max-steps", t.max_steps);
  t.per_device_train_batch_size =
      to_int(a, "--per-device-train-batch-size", t.per_device_train_batch_size);
  t.per_device_eval_batch_size =
      to_int(a, "--per-device-eval-batch-size", t.per_device_eval_batch_size);
  t.gradient_accumulation_steps =
      to_int(a, "--gradient-accumulation-steps", t.gradient_accumulation_steps);
  t.learning_rate = a.number("--learning-rate", t.learning_rate);
  t.lr_scheduler_type = parse_lr_schedule(a.str("--lr-scheduler-type", "linear"));
  t.warmup_steps = a.integer("--warmup-steps", t.warmup_steps);
  t.warmup_ratio = a.number("--warmup-ratio", t.warmup_ratio);
  t.weight_decay = a.number("--weight-decay", t.weight_decay);
  t.max_grad_norm = a.number("--max-grad-norm", t.max_grad_norm);
  t.seed = static_cast<uint64_t>(a.integer("--seed", 42));
  t.logging_steps = to_int(a, "--logging-steps", t.logging_steps);
  t.eval_strategy = parse_interval_strategy(a.str("--eval-strategy", "no"), "--eval-strategy");
  t.eval_steps = a.integer("--eval-steps", 0);
  t.save_strategy = parse_interval_strategy(a.str("--save-strategy", "steps"), "--save-strategy");
  t.save_steps = a.integer("--save-steps", t.save_steps);
  t.save_total_limit = to_int(a, "--save-total-limit", 0);
  t.load_best_model_at_end = a.flag("--load-best-model-at-end");
  t.metric_for_best_model = a.str("--metric-for-best-model", "eval_loss");
  t.lora.r = to_int(a, "--lora-r", 8);
  t.lora.lora_alpha = a.number("--lora-alpha", 16);
  t.lora.lora_dropout = a.number("--lora-dropout", 0.05);
  t.lora.target_modules = parse_target_modules(a.str("--target-modules", "q_proj,v_proj"));
  t.lora.use_rslora = a.flag("--use-rslora");
  t.max_length = to_int(a, "--max-length", t.max_length);
  t.template_kind = data::parse_template_kind(a.str("--template", "seed"));
  t.data_fraction = a.number("--data-fraction", t.data_fraction);
  t.eval_fraction = a.number("--eval-fraction", t.eval_fraction);
  t.shuffle = a.flag("--shuffle");
  t.train_on_prompt = a.flag("--train-on-prompt");
  t.skip_bad_records = a.flag("--skip-bad-records");
  t.max_group_tokens = to_int(a, "--max-group-tokens", t.max_group_tokens);
  t.threads = to_int(a, "--threads", 0);

  // The effective options, for OUTPUT_DIR/checkpoint-*/training_args.json.
  Json args_json = Json::object();
  for (const Option& o : kSpec.options) {
    if (!a.has(o.name) || o.name == "--config") continue;
    std::string key = o.name.substr(2);
    for (char& ch : key) ch = ch == '-' ? '_' : ch;
    const auto values = a.all(o.name);
    args_json[key] = o.repeatable      ? Json(values)
                     : o.value.empty() ? Json(true)
                                       : Json(values.back());
  }
  args_json["device"] = select_device(a).device == ops::Device::kCuda ? "cuda" : "cpu";
  args_json["bf16"] = select_precision(a, "auto") == ops::Precision::kBF16;
  announce_backend();
  dist::init();  // joins the job's other ranks when started by mpirun
  return run_training(t, args_json);
}

}  // namespace loratune::cli
