#include "tokenizer/bpe.h"

#include <algorithm>
#include <cstring>
#include <queue>
#include <string>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace loratune::tokenizer {

namespace {

constexpr size_t kFlatMaxSymbols = 256;

inline uint64_t mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDull;
  h ^= h >> 33;
  return h;
}

}  // namespace

uint64_t hash_bytes(std::string_view bytes) {
  const char* p = bytes.data();
  size_t n = bytes.size();
  uint64_t h = 0x243F6A8885A308D3ull ^ (n * 0x9E3779B97F4A7C15ull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0x100000001B3ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t w = 0;
  std::memcpy(&w, p, n);
  h = (h ^ w) * 0x100000001B3ull;
  return mix(h);
}

// ---------------------------------------------------------------------------------------------
// BpeModel

void BpeModel::set_byte_tokens(const int32_t (&ids)[256], int32_t unk_id, bool fuse_unk) {
  std::copy(std::begin(ids), std::end(ids), byte_ids_);
  unk_id_ = unk_id;
  fuse_unk_ = fuse_unk;
}

void BpeModel::set_char_tokens(std::unordered_map<char32_t, int32_t> chars,
                               const int32_t (&byte_ids)[256], bool byte_fallback, int32_t unk_id,
                               bool fuse_unk) {
  set_byte_tokens(byte_ids, unk_id, fuse_unk);
  chars_ = true;
  byte_fallback_ = byte_fallback;
  for (char32_t c = 0; c < 128; ++c) {
    auto it = chars.find(c);
    ascii_ids_[c] = it == chars.end() ? -1 : it->second;
  }
  char_ids_ = std::move(chars);
}

void BpeModel::grow() {
  std::vector<uint64_t> old = std::move(slots_);
  slots_.assign(old.size() * 2, kEmpty);
  --shift_;
  for (uint64_t s : old) {
    if (s == kEmpty) continue;
    size_t i = home(s >> kRankBits);
    while (slots_[i] != kEmpty) i = (i + 1) & (slots_.size() - 1);
    slots_[i] = s;
  }
}

std::vector<std::pair<int32_t, int32_t>> BpeModel::merges() const {
  std::vector<std::pair<uint32_t, uint64_t>> by_rank;  // (rank, pair key)
  for (uint64_t s : slots_)
    if (s != kEmpty)
      by_rank.push_back(
          {static_cast<uint32_t>(s & ((uint64_t{1} << kRankBits) - 1)), s >> kRankBits});
  std::sort(by_rank.begin(), by_rank.end());
  std::vector<std::pair<int32_t, int32_t>> out;
  out.reserve(by_rank.size());
  const uint64_t id_mask = (uint64_t{1} << kIdBits) - 1;
  for (const auto& [rank, key] : by_rank)
    out.push_back({static_cast<int32_t>(key >> kIdBits), static_cast<int32_t>(key & id_mask)});
  return out;
}

void BpeModel::add_merge(int32_t left, int32_t right, int32_t merged, uint32_t rank) {
  if (left < 0 || right < 0 ||
      ((static_cast<uint32_t>(left) | static_cast<uint32_t>(right)) >> kIdBits) != 0)
    throw Error(
        "merges of token ids above " + std::to_string((1 << kIdBits) - 1) + " are not supported",
        "tokenizer merges");
  if (rank >= (uint32_t{1} << kRankBits) - 1)
    throw Error("more than " + std::to_string((1 << kRankBits) - 2) + " merges",
                "tokenizer merges");
  if ((count_ + 1) * 2 > slots_.size()) grow();
  const uint64_t key = pair_key(left, right);
  size_t i = home(key);
  while (slots_[i] != kEmpty && (slots_[i] >> kRankBits) != key) i = (i + 1) & (slots_.size() - 1);
  if (slots_[i] == kEmpty) ++count_;
  slots_[i] = (key << kRankBits) | rank;
  if (merged_by_rank_.size() <= rank) merged_by_rank_.resize(rank + 1, -1);
  merged_by_rank_[rank] = merged;
}

void BpeModel::initial_char_symbols(std::string_view text, std::vector<int32_t>& syms) const {
  bool last_unk = false;
  for (size_t i = 0; i < text.size();) {
    const size_t start = i;
    const char32_t cp = next_code_point(text, i);
    int32_t id = -1;
    if (cp < 128) {
      id = ascii_ids_[cp];
    } else if (auto it = char_ids_.find(cp); it != char_ids_.end()) {
      id = it->second;
    }
    if (id >= 0) {
      syms.push_back(id);
      last_unk = false;
      continue;
    }
    bool bytes_known = byte_fallback_;
    for (size_t k = start; k < i && bytes_known; ++k)
      bytes_known = byte_ids_[static_cast<unsigned char>(text[k])] >= 0;
    if (bytes_known) {
      for (size_t k = start; k < i; ++k)
        syms.push_back(byte_ids_[static_cast<unsigned char>(text[k])]);
      last_unk = false;
    } else if (unk_id_ >= 0 && !(fuse_unk_ && last_unk)) {
      syms.push_back(unk_id_);
      last_unk = true;
    }
  }
}

void BpeModel::initial_symbols(std::string_view bytes, std::vector<int32_t>& syms) const {
  syms.clear();
  if (chars_) {
    initial_char_symbols(bytes, syms);
    return;
  }
  bool last_unk = false;
  for (char c : bytes) {
    int32_t id = byte_ids_[static_cast<unsigned char>(c)];
    if (id >= 0) {
      syms.push_back(id);
      last_unk = false;
    } else if (unk_id_ >= 0 && !(fuse_unk_ && last_unk)) {
      syms.push_back(unk_id_);
      last_unk = true;
    }
  }
}

void BpeModel::encode_word(std::string_view bytes, std::vector<int32_t>& out) const {
  if (bytes.size() <= kFlatMaxSymbols)
    encode_word_flat(bytes, out);
  else
    encode_word_heap(bytes, out);
}

void BpeModel::encode_word_flat(std::string_view bytes, std::vector<int32_t>& out) const {
  thread_local std::vector<int32_t> syms;
  thread_local std::vector<uint32_t> ranks;  // ranks[k]: merge rank of (syms[k], syms[k+1])
  initial_symbols(bytes, syms);
  size_t n = syms.size();
  if (n > 1) {
    ranks.resize(n - 1);
    for (size_t k = 0; k + 1 < n; ++k) ranks[k] = rank_of(syms[k], syms[k + 1]);
    for (;;) {
      size_t best = 0;
      uint32_t best_rank = UINT32_MAX;
      for (size_t k = 0; k + 1 < n; ++k) {
        if (ranks[k] < best_rank) {
          best_rank = ranks[k];
          best = k;
        }
      }
      if (best_rank == UINT32_MAX) break;
      syms[best] = merged_by_rank_[best_rank];
      std::memmove(&syms[best + 1], &syms[best + 2], (n - best - 2) * sizeof(int32_t));
      if (best + 1 < n - 1)
        std::memmove(&ranks[best + 1], &ranks[best + 2], (n - best - 3) * sizeof(uint32_t));
      --n;
      if (best > 0) ranks[best - 1] = rank_of(syms[best - 1], syms[best]);
      if (best + 1 < n) ranks[best] = rank_of(syms[best], syms[best + 1]);
    }
  }
  out.insert(out.end(), syms.begin(), syms.begin() + static_cast<ptrdiff_t>(n));
}

void BpeModel::encode_word_heap(std::string_view bytes, std::vector<int32_t>& out) const {
  thread_local std::vector<int32_t> syms;
  thread_local std::vector<int32_t> prev, next;
  initial_symbols(bytes, syms);
  const int32_t n = static_cast<int32_t>(syms.size());
  prev.resize(syms.size());
  next.resize(syms.size());
  for (int32_t k = 0; k < n; ++k) {
    prev[k] = k - 1;
    next[k] = k + 1 < n ? k + 1 : -1;
  }
  // Min-heap on (rank, position): the lowest rank first, the leftmost among equals.
  using Candidate = std::pair<uint32_t, int32_t>;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  for (int32_t k = 0; k + 1 < n; ++k) {
    uint32_t r = rank_of(syms[k], syms[k + 1]);
    if (r != UINT32_MAX) heap.push({r, k});
  }
  while (!heap.empty()) {
    auto [rank, pos] = heap.top();
    heap.pop();
    int32_t right = next[pos];
    if (syms[pos] < 0 || right < 0) continue;               // merged away, or now the last symbol
    if (rank_of(syms[pos], syms[right]) != rank) continue;  // stale: the pair has changed
    syms[pos] = merged_by_rank_[rank];
    syms[right] = -1;
    next[pos] = next[right];
    if (next[pos] >= 0) prev[next[pos]] = pos;
    if (prev[pos] >= 0) {
      uint32_t r = rank_of(syms[prev[pos]], syms[pos]);
      if (r != UINT32_MAX) heap.push({r, prev[pos]});
    }
    if (next[pos] >= 0) {
      uint32_t r = rank_of(syms[pos], syms[next[pos]]);
      if (r != UINT32_MAX) heap.push({r, pos});
    }
  }
  for (int32_t k = n > 0 ? 0 : -1; k >= 0; k = next[k]) out.push_back(syms[k]);
}

// ---------------------------------------------------------------------------------------------
// TokenIndex

void TokenIndex::rehash(size_t slots) {
  slots_.assign(slots, 0);
  for (size_t e = 0; e < entries_.size(); ++e) {
    size_t i = static_cast<size_t>(entries_[e].hash) & (slots - 1);
    while (slots_[i] != 0) i = (i + 1) & (slots - 1);
    slots_[i] = static_cast<uint32_t>(e + 1);
  }
}

void TokenIndex::insert(std::string_view key, int32_t id) {
  if ((entries_.size() + 1) * 2 > slots_.size()) rehash(std::max<size_t>(64, slots_.size() * 2));
  uint64_t h = hash_bytes(key);
  size_t i = static_cast<size_t>(h) & (slots_.size() - 1);
  while (slots_[i] != 0) {
    Entry& e = entries_[slots_[i] - 1];
    if (e.hash == h && e.len == key.size() && pool_.compare(e.off, e.len, key) == 0) {
      e.id = id;
      return;
    }
    i = (i + 1) & (slots_.size() - 1);
  }
  entries_.push_back(
      Entry{h, static_cast<uint32_t>(pool_.size()), static_cast<uint32_t>(key.size()), id});
  pool_.append(key);
  slots_[i] = static_cast<uint32_t>(entries_.size());
}

int32_t TokenIndex::find(std::string_view key) const {
  if (slots_.empty()) return -1;
  uint64_t h = hash_bytes(key);
  size_t i = static_cast<size_t>(h) & (slots_.size() - 1);
  while (slots_[i] != 0) {
    const Entry& e = entries_[slots_[i] - 1];
    if (e.hash == h && e.len == key.size() && pool_.compare(e.off, e.len, key) == 0) return e.id;
    i = (i + 1) & (slots_.size() - 1);
  }
  return -1;
}

// ---------------------------------------------------------------------------------------------
// WordCache

namespace {
constexpr size_t kCacheSlots = size_t{1} << 16;
constexpr size_t kCacheMaxEntries = kCacheSlots / 2;
}  // namespace

WordCache::WordCache() : slots_(kCacheSlots, Entry{0, 0, 0, 0, 0}) {}

bool WordCache::lookup(std::string_view word, uint64_t hash, std::vector<int32_t>& out) const {
  size_t i = static_cast<size_t>(hash) & (kCacheSlots - 1);
  for (;;) {
    const Entry& e = slots_[i];
    if (e.key_len == 0) return false;
    if (e.hash == hash && e.key_len == word.size() &&
        std::memcmp(keys_.data() + e.key_off, word.data(), word.size()) == 0) {
      out.insert(out.end(), ids_.begin() + e.ids_off, ids_.begin() + e.ids_off + e.ids_len);
      return true;
    }
    i = (i + 1) & (kCacheSlots - 1);
  }
}

void WordCache::insert(std::string_view word, uint64_t hash, const int32_t* ids, size_t n) {
  if (word.empty() || word.size() > kMaxWordBytes) return;
  if (used_ >= kCacheMaxEntries) clear();
  size_t i = static_cast<size_t>(hash) & (kCacheSlots - 1);
  while (slots_[i].key_len != 0) {
    const Entry& e = slots_[i];
    if (e.hash == hash && e.key_len == word.size() &&
        std::memcmp(keys_.data() + e.key_off, word.data(), word.size()) == 0)
      return;  // already there
    i = (i + 1) & (kCacheSlots - 1);
  }
  slots_[i] = Entry{hash, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(word.size()),
                    static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(n)};
  keys_.append(word);
  ids_.insert(ids_.end(), ids, ids + n);
  ++used_;
}

void WordCache::clear() {
  if (used_ == 0) return;
  std::fill(slots_.begin(), slots_.end(), Entry{0, 0, 0, 0, 0});
  keys_.clear();
  ids_.clear();
  used_ = 0;
}

}  // namespace loratune::tokenizer
