// Internal: what a loaded tokenizer is made of, shared by the loader and the encoder.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace loratune::tokenizer {

// Finds added tokens in text the way tokenizers' AddedVocabulary does: leftmost-longest,
// non-overlapping, then the single_word / lstrip / rstrip rules.
class AddedTokenMatcher {
 public:
  struct Match {
    size_t begin;  // including whitespace taken by lstrip
    size_t end;    // including whitespace taken by rstrip
    int32_t id;
  };

  void build(const std::vector<AddedToken>& tokens, bool normalized);
  bool empty() const { return tokens_.empty(); }
  // The first match at or after `from`; false when there is none.
  bool next(std::string_view text, size_t from, bool split_special, Match& match) const;

 private:
  std::vector<AddedToken> tokens_;                        // longest first
  std::array<std::vector<uint16_t>, 256> by_first_byte_;  // indices into tokens_
};

enum class Normalizer { kNone, kNfc };

class TokenizerData {
 public:
  uint64_t uid = 0;  // distinguishes tokenizers in the per-thread word caches

  std::vector<std::string> token_strings;  // id -> vocabulary spelling; empty: no such id
  std::vector<std::string> token_bytes;    // id -> bytes the id decodes to
  std::vector<uint8_t> flags;              // id -> kValid | kSpecial
  TokenIndex token_ids;                    // spelling -> id (vocab and added)
  TokenIndex raw_word_ids;                 // bytes -> id, with ignore_merges

  BpeModel bpe;
  int32_t byte_ids[256];
  bool ignore_merges = false;
  Normalizer normalizer = Normalizer::kNfc;
  SplitPattern pattern = SplitPattern::kQwen2;

  std::vector<AddedToken> added;
  AddedTokenMatcher raw_matcher;         // added tokens with normalized == false
  AddedTokenMatcher normalized_matcher;  // normalized == true

  int32_t eos = -1, bos = -1, pad = -1;
  std::vector<int32_t> stop_ids;

  static constexpr uint8_t kValid = 1;
  static constexpr uint8_t kSpecial = 2;
};

}  // namespace loratune::tokenizer
