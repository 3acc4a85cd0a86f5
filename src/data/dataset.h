// The data pipeline of training and evaluation: records from JSON / JSONL files, templated and
// tokenized into (ids, labels) examples, the seed recipe's fraction and train/eval split, and
// the per-epoch batch order.
//
//   read_records      file -> records (alpaca columns, chat messages or sharegpt conversations)
//   split_records     records -> first fraction -> train / eval (in order, or shuffled first)
//   tokenize_records  records -> prompt ids + completion ids + end token, labels masked
//   make_batches      example count -> batches of indices for one epoch
//
// Train and eval data go through the same functions, so they see the same template, the same
// prompt/answer boundary and the same end token.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "data/template.h"

namespace loratune::tokenizer {
class Tokenizer;
}

namespace loratune::data {

// One training record after parsing.
struct Record {
  // The final turn: instruction / input / output / system (template.h). For chat records the
  // instruction is the last user message, the output the last assistant message, input empty.
  Example example;
  // The turns before the final one, as (user, assistant) pairs: alpaca's "history" column or
  // the earlier turns of a conversation. The templates put them into the prompt (see
  // apply_template_with_history), so they are never in the loss unless train_on_prompt.
  std::vector<std::pair<std::string, std::string>> history;
};

// Counts add to what the struct already holds, so one ReadStats can total several files.
struct ReadStats {
  int64_t records = 0;        // records returned
  int64_t skipped_bad = 0;    // malformed records skipped (skip_bad only)
  int64_t skipped_empty = 0;  // records whose answer is empty or only whitespace
  std::string first_bad;      // the error of the first malformed record skipped, if any
};

// Reads a dataset file: a JSON array of records, or JSONL (one record per line; blank lines
// are ignored). Which one is decided by the content: a file whose first character (after a
// UTF-8 BOM and whitespace) is '[' is a JSON array, anything else is JSONL.
//
// Record kinds, recognised per record by their keys:
//   alpaca    {"instruction": str, "input": str (optional), "output": str,
//              "system": str (optional), "history": [[user, assistant], ...] (optional)}
//   chat      {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
//   sharegpt  {"conversations": [{"from": "system"|"human"|"gpt", "value": str}, ...]}
// Optional fields may also be null. Both chat kinds accept either spelling of the roles
// (user/human, assistant/gpt) and a top-level "system" string; a system message may only come
// first; then user and assistant alternate, starting with user and ending with assistant.
// Unknown keys are ignored.
//
// A malformed record (invalid JSON, not an object, a missing field, a wrong type, a bad
// conversation) throws Error naming the file and the line (JSONL) or array index (JSON) and
// what is wrong; with skip_bad it is skipped and counted instead. A syntax error inside a JSON
// array cannot be skipped (the records after it cannot be found) and always throws, naming the
// line and column. Records whose answer is empty or only whitespace are skipped and counted.
// A file that yields no record at all throws Error("no usable records", ...) with the counts.
// `stats` may be null.
std::vector<Record> read_records(const std::string& path, bool skip_bad, ReadStats* stats);

// The same for text already in memory; `name` stands for the file in errors.
std::vector<Record> read_records_from_string(std::string_view text, const std::string& name,
                                             bool skip_bad, ReadStats* stats);

struct TokenizedExample {
  std::vector<int> ids;     // prompt ids + completion ids + end token
  std::vector<int> labels;  // same length; -100 on the prompt unless train_on_prompt
};

inline constexpr int kIgnoreLabel = -100;

struct TokenizeOptions {
  TemplateKind kind = TemplateKind::kSeed;
  int max_length = 512;          // truncation (of the end, like HF); counted
  bool train_on_prompt = false;  // the seed recipe's behaviour: loss on every token
};

// Counts add to what the struct already holds.
struct TokenizeStats {
  int64_t truncated = 0;          // examples longer than max_length, cut at the end
  int64_t dropped_no_answer = 0;  // examples left without a labelled token by truncation
  int64_t tokens = 0;             // tokens in the examples returned
  int64_t labelled_tokens = 0;    // of those, labelled ones at position >= 1 (the loss's)
  int64_t longest = 0;            // the longest example before truncation, in tokens
};

// The id that ends every completion: for seed the tokenizer's EOS (tok.eos_id(), or
// <|endoftext|> when the tokenizer names none), for chatml <|im_end|>. Throws Error when the
// tokenizer has no such token.
int end_token_id(const tokenizer::Tokenizer& tok, TemplateKind kind);

// Templates and tokenizes each record. Prompt and completion are tokenized SEPARATELY, so the
// boundary is the one generation sees (the prompt's ids are exactly encode(prompt)); the end
// token is appended to the completion and kept in the loss, so the model learns to stop.
// Examples longer than max_length are cut at the end (the end token may be cut). The loss
// shifts labels by one, so labels[0] never counts: an example without a labelled token at
// position >= 1 after truncation is dropped and counted. Throws UsageError for max_length < 2.
// Runs on the OpenMP threads; the result is in record order and the same for any thread count.
std::vector<TokenizedExample> tokenize_records(const std::vector<Record>& records,
                                               const tokenizer::Tokenizer& tok,
                                               const TokenizeOptions& opt, TokenizeStats* stats);

struct SplitOptions {
  double data_fraction = 1.0;  // keep the first fraction of the records (after --shuffle)
  double eval_fraction = 0.2;  // the last fraction of the kept records is eval (0: none)
  bool shuffle = false;        // shuffle records with `seed` before taking the fraction
  uint64_t seed = 42;
};

struct Split {
  std::vector<Record> train, eval;
};

// The seed recipe: the first 1% of the file, split 80/20 in order.
//   kept = round-half-even(data_fraction * n)       (HF datasets' "train[:1%]" rounding)
//   eval = ceil(eval_fraction * kept), train = the rest, in front   (HF train_test_split,
//          shuffle=False; unlike HF no record is left out when the two sizes don't add up)
// 1% of 1000 records: 10 kept, 8 train, 2 eval. Throws UsageError for a fraction out of range
// (data_fraction in (0, 1], eval_fraction in [0, 1)), and when nothing is kept or nothing is
// left for training.
Split split_records(std::vector<Record> records, const SplitOptions& opt);

// Batches of example indices for one epoch, with HF Trainer semantics: shuffle=true draws a
// permutation of all examples from (seed, epoch) (RandomSampler), shuffle=false keeps file
// order (eval, SequentialSampler); the last partial batch is kept. The same on every machine
// (splitmix64 from core/rng.h, unbiased bounded draws), so a resumed run sees the same order.
// Throws UsageError for batch_size < 1.
std::vector<std::vector<int>> make_batches(size_t n_examples, int batch_size, bool shuffle,
                                           uint64_t seed, int epoch);

}  // namespace loratune::data
