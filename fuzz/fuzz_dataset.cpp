// libFuzzer target for the dataset reader and the example pipeline.
//
// Any bytes are a dataset file: read_records_from_string must return records or throw
// loratune::Error, never crash. The first byte's low bit selects skip_bad. The records it
// returns must have a non-blank answer and the counts must match; they are then tokenized with
// a small byte-level tokenizer (both templates, a max length taken from the input), and every
// example must have ids and labels of equal length within max length, prompt labels -100,
// unmasked labels equal to their ids, and a labelled token at a position >= 1. split_records
// and make_batches must partition what they are given.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "core/error.h"
#include "data/dataset.h"
#include "tokenizer/tokenizer.h"

using loratune::data::kIgnoreLabel;

namespace {

std::unique_ptr<loratune::tokenizer::Tokenizer> g_tokenizer;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_dataset: invariant broken: %s\n", what);
    std::abort();
  }
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
  });
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  std::string tmpl = (std::filesystem::temp_directory_path() / "fuzz-data-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) std::abort();
  loratune::tokenizer::write_byte_level_tokenizer(
      tmpl, {{" ", "P"}, {"a", "r"}, {"\n", "\n"}, {":", " "}, {"\xE4", "\xBD"}});
  g_tokenizer =
      std::make_unique<loratune::tokenizer::Tokenizer>(loratune::tokenizer::Tokenizer::load(tmpl));
  std::filesystem::remove_all(tmpl);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  const bool skip_bad = size > 0 && (data[0] & 1);
  loratune::data::ReadStats stats;
  std::vector<loratune::data::Record> records;
  try {
    records = loratune::data::read_records_from_string(text, "fuzz.json", skip_bad, &stats);
  } catch (const loratune::Error&) {
    return 0;
  }
  check(!records.empty(), "read_records returned no records without an error");
  check(stats.records == static_cast<int64_t>(records.size()), "stats.records is wrong");
  check(skip_bad || stats.skipped_bad == 0, "records skipped without skip_bad");
  for (const auto& r : records) check(!blank(r.example.output), "a record with an empty answer");

  const int max_length = 2 + static_cast<int>(size > 1 ? data[size - 1] % 64 : 30);
  for (auto kind : {loratune::data::TemplateKind::kSeed, loratune::data::TemplateKind::kChatML}) {
    loratune::data::TokenizeOptions opt;
    opt.kind = kind;
    opt.max_length = max_length;
    opt.train_on_prompt = size > 2 && (data[1] & 1);
    loratune::data::TokenizeStats tstats;
    auto examples = loratune::data::tokenize_records(records, *g_tokenizer, opt, &tstats);
    check(static_cast<int64_t>(examples.size()) + tstats.dropped_no_answer ==
              static_cast<int64_t>(records.size()),
          "examples + dropped != records");
    for (const auto& ex : examples) {
      check(ex.ids.size() == ex.labels.size(), "ids and labels differ in length");
      check(!ex.ids.empty() && ex.ids.size() <= static_cast<size_t>(max_length),
            "example longer than max_length");
      bool labelled = false, in_answer = false;
      for (size_t i = 0; i < ex.ids.size(); ++i) {
        check(g_tokenizer->is_valid(ex.ids[i]), "invalid id");
        if (ex.labels[i] != kIgnoreLabel) {
          check(ex.labels[i] == ex.ids[i], "a label differs from its id");
          labelled |= i >= 1;
          in_answer = true;
        } else {
          check(!in_answer, "a masked label after the answer began");
        }
      }
      check(labelled, "an example without a labelled token");
    }
  }

  loratune::data::SplitOptions sopt;
  sopt.eval_fraction = records.size() > 1 ? 0.2 : 0.0;
  sopt.shuffle = skip_bad;
  auto split = loratune::data::split_records(records, sopt);
  check(split.train.size() + split.eval.size() == records.size(), "split lost records");
  auto batches = loratune::data::make_batches(split.train.size(), 3, true, size, 1);
  std::vector<int> seen;
  for (const auto& b : batches) seen.insert(seen.end(), b.begin(), b.end());
  std::sort(seen.begin(), seen.end());
  for (size_t i = 0; i < seen.size(); ++i) check(seen[i] == static_cast<int>(i), "batch coverage");
  check(seen.size() == split.train.size(), "batch coverage");
  return 0;
}
