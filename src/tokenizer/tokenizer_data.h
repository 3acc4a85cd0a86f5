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

// One step of tokenizer.json's normalizer (a Sequence is a list of them).
struct NormalizerStep {
  enum class Kind { kNfc, kPrepend, kReplace };
  Kind kind = Kind::kNfc;
  std::string text;  // kPrepend: what goes in front (of non-empty text); kReplace: what is replaced
  std::string with;  // kReplace: its replacement
};

// How the vocabulary spells text. Byte-level (Qwen2, Llama 3): every byte has a printable
// stand-in and the pre-tokenizer is a regex split. SentencePiece-style (Llama 2, Mistral):
// tokens are UTF-8 characters with "▁" for a space, characters outside the vocabulary become
// "<0xAB>" byte tokens (byte_fallback), and the text is one word or split at each "▁".
enum class Alphabet { kByteLevel, kSentencePiece };

// The Metaspace pre-tokenizer: spaces become `replacement`, which is also put in front of the
// text (kFirst: only of the text's first stretch, before any added token) unless it starts
// with one; `split` cuts the text before each replacement.
struct MetaspaceRule {
  enum class Prepend { kAlways, kFirst, kNever };
  bool enabled = false;
  std::string replacement;
  Prepend prepend = Prepend::kAlways;
  bool split = true;
};

// What the decoder does beyond mapping each token to its bytes.
struct DecoderRule {
  std::string space_symbol;               // SentencePiece: what decodes to a space ("▁")
  bool byte_tokens = false;               // "<0xAB>" decodes to the byte 0xAB (ByteFallback)
  int strip_leading_spaces = 0;           // Strip after Fuse: of the whole text
  bool first_token_drops_spaces = false;  // Metaspace: the first token's "▁" vanish
};

class TokenizerData {
 public:
  uint64_t uid = 0;  // distinguishes tokenizers in the per-thread word caches

  std::vector<std::string> token_strings;  // id -> vocabulary spelling; empty: no such id
  std::vector<std::string> token_bytes;    // id -> bytes the id decodes to
  std::vector<uint8_t> flags;              // id -> kValid | kSpecial
  TokenIndex token_ids;                    // spelling -> id (vocab and added)
  TokenIndex raw_word_ids;                 // bytes -> id, with ignore_merges

  BpeModel bpe;
  // Byte-level: the token of each byte. SentencePiece: of each ASCII character (or its byte
  // token), -1 above 127. Words of one byte are looked up here.
  int32_t byte_ids[256];
  bool ignore_merges = false;
  Alphabet alphabet = Alphabet::kByteLevel;
  std::vector<NormalizerStep> normalizers;
  SplitPattern pattern = SplitPattern::kQwen2;  // byte-level
  // Byte-level, a Digits pre-tokenizer first (SmolLM2): numbers split from the text before the
  // regex, each digit apart with individual_digits.
  enum class Digits { kKept, kRuns, kEach } digits = Digits::kKept;
  MetaspaceRule metaspace;  // SentencePiece; disabled: the text is one word
  DecoderRule decoder;
  // The post-processor's special tokens before and after a single sequence ("<s>" $A).
  std::vector<int32_t> prefix_ids, suffix_ids;

  std::vector<AddedToken> added;
  AddedTokenMatcher raw_matcher;         // added tokens with normalized == false
  AddedTokenMatcher normalized_matcher;  // normalized == true

  int32_t eos = -1, bos = -1, pad = -1, unk = -1;
  std::vector<int32_t> stop_ids;

  static constexpr uint8_t kValid = 1;
  static constexpr uint8_t kSpecial = 2;
};

}  // namespace loratune::tokenizer
