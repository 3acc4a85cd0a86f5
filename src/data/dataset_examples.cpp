// From records to training examples: tokenization with label masks, the fraction and the
// train/eval split, and the per-epoch batch order.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <exception>
#include <iterator>
#include <optional>

#include "core/error.h"
#include "core/rng.h"
#include "data/dataset.h"
#include "tokenizer/tokenizer.h"

namespace loratune::data {

namespace {

// Uniform in [0, n) without modulo bias (Lemire's multiply-and-reject); n > 0.
uint64_t uniform_below(Rng& rng, uint64_t n) {
  unsigned __int128 m = static_cast<unsigned __int128>(rng.next_u64()) * n;
  uint64_t low = static_cast<uint64_t>(m);
  if (low < n) {
    const uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng.next_u64()) * n;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

// Fisher-Yates, from the back (as Python's random.shuffle).
template <typename T>
void shuffle_in_place(std::vector<T>& v, Rng& rng) {
  for (size_t i = v.size(); i > 1; --i) {
    size_t j = static_cast<size_t>(uniform_below(rng, i));
    std::swap(v[i - 1], v[j]);
  }
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Independent streams for the record shuffle and for each epoch's batch order.
constexpr uint64_t kSplitStream = 0x5350'4c49'5400'0001ull;
constexpr uint64_t kEpochStream = 0x4550'4f43'4800'0002ull;

Rng stream_rng(uint64_t seed, uint64_t stream, uint64_t index) {
  Rng mix(seed ^ stream);
  uint64_t a = mix.next_u64();
  Rng mix2(a + index * 0x9e3779b97f4a7c15ull);
  return Rng(mix2.next_u64());
}

std::optional<TokenizedExample> tokenize_one(const Record& record, const tokenizer::Tokenizer& tok,
                                             const TokenizeOptions& opt, int end_id,
                                             int64_t* full_length) {
  PromptParts parts = apply_template_with_history(opt.kind, record.example, record.history);
  TokenizedExample ex;
  tok.encode_prompt_into(parts.prompt, ex.ids);  // with Llama's BOS, as tokenizer(text) gives
  const size_t prompt_len = ex.ids.size();
  tokenizer::EncodeOptions answer;
  answer.continuation = true;
  tok.encode_into(parts.completion, ex.ids, answer);
  ex.ids.push_back(end_id);
  *full_length = static_cast<int64_t>(ex.ids.size());
  ex.labels = ex.ids;
  if (!opt.train_on_prompt) {
    std::fill(ex.labels.begin(), ex.labels.begin() + static_cast<std::ptrdiff_t>(prompt_len),
              kIgnoreLabel);
  }
  if (ex.ids.size() > static_cast<size_t>(opt.max_length)) {
    ex.ids.resize(static_cast<size_t>(opt.max_length));
    ex.labels.resize(static_cast<size_t>(opt.max_length));
  }
  for (size_t i = 1; i < ex.labels.size(); ++i) {
    if (ex.labels[i] != kIgnoreLabel) return ex;
  }
  return std::nullopt;
}

}  // namespace

int end_token_id(const tokenizer::Tokenizer& tok, TemplateKind kind) {
  const char* name = template_end_token(kind);
  if (!template_has_end_token(kind) && tok.eos_id() >= 0 && tok.is_valid(tok.eos_id())) {
    return tok.eos_id();
  }
  std::optional<int32_t> id = tok.token_id(name);
  if (!id) {
    throw Error(std::string("the tokenizer has no ") + name + " token, which the " +
                    template_name(kind) + " template ends every answer with",
                "tokenizer", "use a Qwen2 tokenizer, or a template whose end token it has");
  }
  return *id;
}

std::vector<TokenizedExample> tokenize_records(const std::vector<Record>& records,
                                               const tokenizer::Tokenizer& tok,
                                               const TokenizeOptions& opt, TokenizeStats* stats) {
  if (opt.max_length < 2) {
    throw UsageError("max length must be at least 2 tokens, got " + std::to_string(opt.max_length),
                     "--max-length");
  }
  const int end_id = end_token_id(tok, opt.kind);
  const int64_t n = static_cast<int64_t>(records.size());
  std::vector<std::optional<TokenizedExample>> out(records.size());
  std::vector<int64_t> full_length(records.size(), 0);
  std::exception_ptr failure;
#pragma omp parallel for schedule(dynamic, 8)
  for (int64_t i = 0; i < n; ++i) {
    try {
      out[i] = tokenize_one(records[i], tok, opt, end_id, &full_length[i]);
    } catch (...) {
#pragma omp critical(loratune_tokenize_failure)
      if (!failure) failure = std::current_exception();
    }
  }
  if (failure) std::rethrow_exception(failure);

  TokenizeStats local;
  std::vector<TokenizedExample> examples;
  examples.reserve(records.size());
  for (int64_t i = 0; i < n; ++i) {
    if (full_length[i] > opt.max_length) ++local.truncated;
    local.longest = std::max(local.longest, full_length[i]);
    if (!out[i]) {
      ++local.dropped_no_answer;
      continue;
    }
    local.tokens += static_cast<int64_t>(out[i]->ids.size());
    for (size_t t = 1; t < out[i]->labels.size(); ++t) {
      local.labelled_tokens += out[i]->labels[t] != kIgnoreLabel;
    }
    examples.push_back(std::move(*out[i]));
  }
  if (stats) {
    stats->truncated += local.truncated;
    stats->dropped_no_answer += local.dropped_no_answer;
    stats->tokens += local.tokens;
    stats->labelled_tokens += local.labelled_tokens;
    stats->longest = std::max(stats->longest, local.longest);
  }
  return examples;
}

Split split_records(std::vector<Record> records, const SplitOptions& opt) {
  if (!(opt.data_fraction > 0.0 && opt.data_fraction <= 1.0)) {
    throw UsageError("the data fraction must be in (0, 1], got " + number(opt.data_fraction),
                     "--data-fraction");
  }
  if (!(opt.eval_fraction >= 0.0 && opt.eval_fraction < 1.0)) {
    throw UsageError("the eval fraction must be in [0, 1), got " + number(opt.eval_fraction),
                     "--eval-fraction");
  }
  if (opt.shuffle) {
    Rng rng = stream_rng(opt.seed, kSplitStream, 0);
    shuffle_in_place(records, rng);
  }
  const size_t n = records.size();
  // Round half to even, as Python's round() in HF datasets' percent slicing.
  size_t kept =
      opt.data_fraction >= 1.0
          ? n
          : static_cast<size_t>(std::nearbyint(opt.data_fraction * static_cast<double>(n)));
  kept = std::min(kept, n);
  if (kept == 0) {
    throw UsageError("a data fraction of " + number(opt.data_fraction) + " keeps none of " +
                         std::to_string(n) + " records",
                     "--data-fraction", n == 0 ? "the dataset is empty" : "raise the fraction");
  }
  // ceil, as HF train_test_split's test size.
  size_t n_eval =
      opt.eval_fraction > 0.0
          ? static_cast<size_t>(std::ceil(opt.eval_fraction * static_cast<double>(kept)))
          : 0;
  n_eval = std::min(n_eval, kept);
  if (n_eval == kept) {
    throw UsageError("no training records left: " + std::to_string(kept) +
                         " records kept and the eval fraction takes " + std::to_string(n_eval),
                     "--eval-fraction", "raise --data-fraction or lower --eval-fraction");
  }
  records.resize(kept);
  Split split;
  const auto mid = records.begin() + static_cast<std::ptrdiff_t>(kept - n_eval);
  split.eval.assign(std::make_move_iterator(mid), std::make_move_iterator(records.end()));
  records.erase(mid, records.end());
  split.train = std::move(records);
  return split;
}

std::vector<std::vector<int>> make_batches(size_t n_examples, int batch_size, bool shuffle,
                                           uint64_t seed, int epoch) {
  if (batch_size < 1) {
    throw UsageError("the batch size must be at least 1, got " + std::to_string(batch_size));
  }
  std::vector<int> order(n_examples);
  for (size_t i = 0; i < n_examples; ++i) order[i] = static_cast<int>(i);
  if (shuffle) {
    Rng rng = stream_rng(seed, kEpochStream, static_cast<uint64_t>(static_cast<int64_t>(epoch)));
    shuffle_in_place(order, rng);
  }
  std::vector<std::vector<int>> batches;
  batches.reserve((n_examples + static_cast<size_t>(batch_size) - 1) / batch_size);
  for (size_t start = 0; start < n_examples; start += static_cast<size_t>(batch_size)) {
    size_t end = std::min(n_examples, start + static_cast<size_t>(batch_size));
    batches.emplace_back(order.begin() + static_cast<std::ptrdiff_t>(start),
                         order.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return batches;
}

}  // namespace loratune::data
