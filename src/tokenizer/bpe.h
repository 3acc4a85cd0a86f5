// BPE by merge rank, as Hugging Face tokenizers applies it: the lowest-ranked
// adjacent pair is merged first, ties going to the leftmost pair, until no pair has a merge.
// Short words use a flat array; long ones (thousands of bytes of one character class) a heap,
// so that the work stays O(n log n). A per-thread word cache skips repeated words.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace loratune::tokenizer {

uint64_t hash_bytes(std::string_view bytes);

class BpeModel {
 public:
  BpeModel() = default;

  // The token of each single byte (-1 where the vocabulary has none), and the unknown token
  // used for such bytes (-1: drop them, as tokenizers does without an unk_token).
  void set_byte_tokens(const int32_t (&ids)[256], int32_t unk_id, bool fuse_unk);
  // SentencePiece-style symbols instead: each UTF-8 character of a word is its own token
  // (`chars`); a character the vocabulary lacks becomes the tokens of its bytes (the "<0xAB>"
  // tokens in `byte_ids`) with byte fallback when all of them exist, else the unknown token.
  void set_char_tokens(std::unordered_map<char32_t, int32_t> chars, const int32_t (&byte_ids)[256],
                       bool byte_fallback, int32_t unk_id, bool fuse_unk);
  // Declares that merging (left, right) gives `merged`; rank is the merge's line number.
  // A later merge of the same pair replaces the earlier one.
  void add_merge(int32_t left, int32_t right, int32_t merged, uint32_t rank);
  size_t merge_count() const { return count_; }
  // Every merge as (left, right), by increasing rank.
  std::vector<std::pair<int32_t, int32_t>> merges() const;

  // Appends the ids of one pre-tokenized piece (raw bytes; valid UTF-8 for characters) to `out`.
  void encode_word(std::string_view bytes, std::vector<int32_t>& out) const;

  // The same, with the algorithm chosen by the caller (tests check both against each other).
  void encode_word_flat(std::string_view bytes, std::vector<int32_t>& out) const;
  void encode_word_heap(std::string_view bytes, std::vector<int32_t>& out) const;

 private:
  // A slot packs (left << 20 | right) << 24 | rank, so the table of Qwen2's 151k merges is
  // 4 MiB; the merged token of each rank is in merged_by_rank_.
  static constexpr int kIdBits = 20;
  static constexpr int kRankBits = 24;
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << kIdBits) |
           static_cast<uint32_t>(right);
  }
  size_t home(uint64_t key) const {
    return static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  // The rank of merging (left, right), or UINT32_MAX when there is no such merge.
  uint32_t rank_of(int32_t left, int32_t right) const {
    if ((static_cast<uint32_t>(left) | static_cast<uint32_t>(right)) >> kIdBits) return UINT32_MAX;
    const uint64_t key = pair_key(left, right);
    for (size_t i = home(key);; i = (i + 1) & (slots_.size() - 1)) {
      uint64_t s = slots_[i];
      if (s == kEmpty) return UINT32_MAX;
      if ((s >> kRankBits) == key)
        return static_cast<uint32_t>(s & ((uint64_t{1} << kRankBits) - 1));
    }
  }
  void grow();
  void initial_symbols(std::string_view bytes, std::vector<int32_t>& syms) const;

  std::vector<uint64_t> slots_ = std::vector<uint64_t>(16, kEmpty);
  std::vector<int32_t> merged_by_rank_;
  int shift_ = 60;  // 64 - log2(slots_.size())
  size_t count_ = 0;
  void initial_char_symbols(std::string_view text, std::vector<int32_t>& syms) const;

  int32_t byte_ids_[256] = {};
  int32_t unk_id_ = -1;
  bool fuse_unk_ = false;
  bool chars_ = false;  // SentencePiece-style symbols
  bool byte_fallback_ = false;
  int32_t ascii_ids_[128] = {};
  std::unordered_map<char32_t, int32_t> char_ids_;
};

// Token spelling -> id, as a flat open-addressing table (the vocabulary has ~150k entries and
// loading does three lookups per merge).
class TokenIndex {
 public:
  // Maps `key` to `id`, replacing an earlier id of the same key.
  void insert(std::string_view key, int32_t id);
  // The id of `key`, or -1.
  int32_t find(std::string_view key) const;
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    uint64_t hash;
    uint32_t off;
    uint32_t len;
    int32_t id;
  };
  void rehash(size_t slots);
  std::vector<uint32_t> slots_;  // entry index + 1; 0: empty
  std::vector<Entry> entries_;
  std::string pool_;
};

// Cache of encoded words: word bytes -> ids. Bounded; cleared when full.
class WordCache {
 public:
  WordCache();
  // Appends the cached ids of `word` to `out` and returns true, or returns false.
  bool lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& out) const;
  void insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t n);
  void clear();

  static constexpr size_t kMaxWordBytes = 128;

 private:
  struct Entry {
    uint64_t hash;
    uint32_t key_off;
    uint32_t key_len;  // 0: empty slot
    uint32_t ids_off;
    uint32_t ids_len;
  };
  std::vector<Entry> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t used_ = 0;
};

}  // namespace loratune::tokenizer
