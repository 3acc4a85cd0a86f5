// Encoding and decoding with a loaded tokenizer.
#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/tokenizer_data.h"
#include "tokenizer/unicode.h"

namespace loratune::tokenizer {

// ---------------------------------------------------------------------------------------------
// Added tokens

void AddedTokenMatcher::build(const std::vector<AddedToken>& tokens, bool normalized) {
  tokens_.clear();
  for (const AddedToken& t : tokens)
    if (t.normalized == normalized && !t.content.empty()) tokens_.push_back(t);
  std::stable_sort(tokens_.begin(), tokens_.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });
  for (auto& v : by_first_byte_) v.clear();
  for (size_t i = 0; i < tokens_.size(); ++i)
    by_first_byte_[static_cast<unsigned char>(tokens_[i].content[0])].push_back(
        static_cast<uint16_t>(i));
}

namespace {

// The code point that ends at byte `end` (exclusive) of valid UTF-8.
char32_t code_point_before(std::string_view text, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return next_code_point(text, start);
}

bool is_word_char(char32_t cp) {
  CharClass c = char_class(cp);
  return c == CharClass::kLetter || c == CharClass::kNumber || cp == '_';
}

bool is_white_space(char32_t cp) {
  CharClass c = char_class(cp);
  return c == CharClass::kSpace || c == CharClass::kNewline;
}

}  // namespace

bool AddedTokenMatcher::next(std::string_view text, size_t from, bool split_special,
                             Match& match) const {
  size_t p = from;
  while (p < text.size()) {
    const std::vector<uint16_t>& candidates = by_first_byte_[static_cast<unsigned char>(text[p])];
    const AddedToken* found = nullptr;
    for (uint16_t i : candidates) {
      const AddedToken& t = tokens_[i];
      if (text.compare(p, t.content.size(), t.content) == 0) {
        found = &t;
        break;
      }
    }
    if (!found) {
      ++p;
      continue;
    }
    size_t begin = p, end = p + found->content.size();
    bool skip = split_special && found->special;
    if (found->single_word) {
      if (begin > 0 && is_word_char(code_point_before(text, begin))) skip = true;
      size_t q = end;
      if (end < text.size() && is_word_char(next_code_point(text, q))) skip = true;
    }
    if (skip) {  // the match is consumed without producing a token, as tokenizers does
      p = end;
      continue;
    }
    if (found->lstrip)
      while (begin > from && is_white_space(code_point_before(text, begin))) {
        --begin;
        while (begin > from && (static_cast<unsigned char>(text[begin]) & 0xC0) == 0x80) --begin;
      }
    if (found->rstrip)
      while (end < text.size()) {
        size_t q = end;
        if (!is_white_space(next_code_point(text, q))) break;
        end = q;
      }
    match = Match{begin, end, found->id};
    return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Encoding

namespace {

struct ThreadState {
  uint64_t owner = 0;
  WordCache cache;
  std::vector<Piece> pieces;
};

ThreadState& thread_state(uint64_t uid) {
  thread_local ThreadState state;
  if (state.owner != uid) {
    state.cache.clear();
    state.owner = uid;
  }
  return state;
}

// Appends the ids of one pre-tokenized word.
void encode_word(const TokenizerData& d, ThreadState& st, std::string_view word,
                 std::vector<int32_t>& ids) {
  if (word.size() == 1) {
    int32_t id = d.byte_ids[static_cast<unsigned char>(word[0])];
    if (id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  if (d.ignore_merges) {
    if (int32_t id = d.raw_word_ids.find(word); id >= 0) {
      ids.push_back(id);
      return;
    }
  }
  if (word.size() > WordCache::kMaxWordBytes) {
    d.bpe.encode_word(word, ids);
    return;
  }
  uint64_t h = hash_bytes(word);
  if (st.cache.lookup(word, h, ids)) return;
  size_t start = ids.size();
  d.bpe.encode_word(word, ids);
  st.cache.insert(word, h, ids.data() + start, ids.size() - start);
}

// SentencePiece-style pre-tokenization: the Metaspace rule (spaces to "▁", one in front,
// words cut before each "▁"), or none (the text is one word). `at_start`: the text begins the
// input (Metaspace's prepend_scheme "first").
void encode_metaspace(const TokenizerData& d, ThreadState& st, std::string_view text, bool at_start,
                      std::vector<int32_t>& ids) {
  const MetaspaceRule& m = d.metaspace;
  if (!m.enabled) {
    encode_word(d, st, text, ids);
    return;
  }
  std::string spaced;
  const bool prepend = m.prepend == MetaspaceRule::Prepend::kAlways ||
                       (m.prepend == MetaspaceRule::Prepend::kFirst && at_start);
  for (char c : text) {
    if (c == ' ')
      spaced += m.replacement;
    else
      spaced.push_back(c);
  }
  if (prepend && spaced.compare(0, m.replacement.size(), m.replacement) != 0)
    spaced.insert(0, m.replacement);
  if (!m.split) {
    encode_word(d, st, spaced, ids);
    return;
  }
  size_t begin = 0;
  for (size_t at = spaced.find(m.replacement, 1); at != std::string::npos;
       at = spaced.find(m.replacement, at + 1)) {
    encode_word(d, st, std::string_view(spaced).substr(begin, at - begin), ids);
    begin = at;
  }
  encode_word(d, st, std::string_view(spaced).substr(begin), ids);
}

// Pre-tokenizes and BPE-encodes normalised text that holds no added tokens.
void encode_plain(const TokenizerData& d, std::string_view text, bool at_start,
                  std::vector<int32_t>& ids) {
  if (text.empty()) return;
  if (text.size() > UINT32_MAX / 4)
    throw Error("cannot encode a text of more than 1 GiB at once", "tokenizer",
                "split the text into smaller parts");
  ThreadState& st = thread_state(d.uid);
  if (d.alphabet == Alphabet::kSentencePiece) {
    encode_metaspace(d, st, text, at_start, ids);
    return;
  }
  if (d.digits == TokenizerData::Digits::kKept) {
    pre_tokenize(d.pattern, text, st.pieces);
    for (const Piece& piece : st.pieces)
      encode_word(d, st, text.substr(piece.begin, piece.end - piece.begin), ids);
    return;
  }
  // Digits first: each number (or digit) is a piece; the regex splits the text between them.
  size_t begin = 0;
  auto flush_text = [&](size_t end) {
    if (end == begin) return;
    const std::string_view part = text.substr(begin, end - begin);
    pre_tokenize(d.pattern, part, st.pieces);
    for (const Piece& piece : st.pieces)
      encode_word(d, st, part.substr(piece.begin, piece.end - piece.begin), ids);
  };
  for (size_t i = 0; i < text.size();) {
    size_t next = i;
    if (char_class(next_code_point(text, next)) != CharClass::kNumber) {
      i = next;
      continue;
    }
    flush_text(i);
    if (d.digits == TokenizerData::Digits::kRuns) {
      for (size_t j = next; j < text.size();) {
        size_t after = j;
        if (char_class(next_code_point(text, after)) != CharClass::kNumber) break;
        next = j = after;
      }
    }
    encode_word(d, st, text.substr(i, next - i), ids);
    begin = i = next;
  }
  flush_text(text.size());
}

// The normalizer's steps on `text`; returns `text` itself when nothing changes. `continues`:
// the text goes on from earlier text, so no Prepend puts a space in front.
std::string_view normalise(const TokenizerData& d, std::string_view text, bool continues,
                           std::string& buffer) {
  for (const NormalizerStep& step : d.normalizers) {
    std::string out;
    switch (step.kind) {
      case NormalizerStep::Kind::kNfc:
        if (!nfc_if_needed(text, out)) continue;
        break;
      case NormalizerStep::Kind::kPrepend:
        if (text.empty() || continues) continue;
        out = step.text;
        out += text;
        break;
      case NormalizerStep::Kind::kReplace:
        if (text.find(step.text) == std::string_view::npos) continue;
        for (size_t i = 0; i < text.size();) {
          if (text.compare(i, step.text.size(), step.text) == 0) {
            out += step.with;
            i += step.text.size();
          } else {
            out.push_back(text[i++]);
          }
        }
        break;
    }
    buffer = std::move(out);
    text = buffer;
  }
  return text;
}

// Normalises a stretch of raw text between added tokens, then matches normalized added tokens.
// `first`: the stretch starts the text.
void encode_segment(const TokenizerData& d, std::string_view text, bool first,
                    const EncodeOptions& options, std::vector<int32_t>& ids) {
  if (text.empty()) return;
  std::string normalised;
  text = normalise(d, text, first && options.continuation, normalised);
  const bool at_start = first && !options.continuation;
  if (d.normalized_matcher.empty()) {
    encode_plain(d, text, at_start, ids);
    return;
  }
  size_t pos = 0;
  AddedTokenMatcher::Match m;
  while (d.normalized_matcher.next(text, pos, options.split_special, m)) {
    encode_plain(d, text.substr(pos, m.begin - pos), at_start && pos == 0, ids);
    ids.push_back(m.id);
    pos = m.end;
  }
  encode_plain(d, text.substr(pos), at_start && pos == 0, ids);
}

}  // namespace

void Tokenizer::encode_into(std::string_view text, std::vector<int32_t>& ids,
                            const EncodeOptions& options) const {
  const TokenizerData& d = *data_;
  std::string repaired;
  if (!is_valid_utf8(text)) {
    repaired = utf8_lossy(text);
    text = repaired;
  }
  if (options.add_special_tokens) ids.insert(ids.end(), d.prefix_ids.begin(), d.prefix_ids.end());
  size_t pos = 0;
  AddedTokenMatcher::Match m;
  while (d.raw_matcher.next(text, pos, options.split_special, m)) {
    encode_segment(d, text.substr(pos, m.begin - pos), pos == 0, options, ids);
    ids.push_back(m.id);
    pos = m.end;
  }
  encode_segment(d, text.substr(pos), pos == 0, options, ids);
  if (options.add_special_tokens) ids.insert(ids.end(), d.suffix_ids.begin(), d.suffix_ids.end());
}

void Tokenizer::encode_prompt_into(std::string_view text, std::vector<int32_t>& ids) const {
  const size_t start = ids.size();
  encode_into(text, ids);
  const std::vector<int32_t>& prefix = data_->prefix_ids;
  if (ids.size() - start >= prefix.size() &&
      std::equal(prefix.begin(), prefix.end(), ids.begin() + static_cast<std::ptrdiff_t>(start)))
    return;
  ids.insert(ids.begin() + static_cast<std::ptrdiff_t>(start), prefix.begin(), prefix.end());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  encode_into(text, ids, options);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// Decoding and lookups

bool Tokenizer::is_valid(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < data_->flags.size() &&
         (data_->flags[id] & TokenizerData::kValid);
}

bool Tokenizer::is_special(int32_t id) const {
  return is_valid(id) && (data_->flags[id] & TokenizerData::kSpecial);
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
  return is_valid(id) ? std::string_view(data_->token_bytes[id]) : std::string_view();
}

std::string_view Tokenizer::token_string(int32_t id) const {
  return is_valid(id) ? std::string_view(data_->token_strings[id]) : std::string_view();
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  int32_t id = data_->token_ids.find(token);
  if (id < 0) return std::nullopt;
  return id;
}

// Appends the bytes of one token under the decoder's rules (the first token of a Metaspace
// decoder loses its spaces, a Strip decoder eats leading spaces of the text).
void Tokenizer::append_decoded(int32_t id, DecodeState& state, std::string& bytes) const {
  std::string_view token = data_->token_bytes[id];
  const DecoderRule& rule = data_->decoder;
  const bool first = state.first;
  state.first = false;
  for (char c : token) {
    if (c == ' ' &&
        ((first && rule.first_token_drops_spaces) || state.stripped < rule.strip_leading_spaces)) {
      ++state.stripped;
      continue;
    }
    state.stripped = rule.strip_leading_spaces;  // only leading spaces are stripped
    bytes.push_back(c);
  }
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  DecodeState state;
  for (int32_t id : ids) {
    if (!is_valid(id) || (skip_special && is_special(id))) continue;
    append_decoded(id, state, bytes);
  }
  if (is_valid_utf8(bytes)) return bytes;
  return utf8_lossy(bytes);
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(data_->flags.size());
}
std::vector<std::pair<std::string_view, std::string_view>> Tokenizer::merges() const {
  std::vector<std::pair<std::string_view, std::string_view>> out;
  for (const auto& [left, right] : data_->bpe.merges())
    out.push_back({token_string(left), token_string(right)});
  return out;
}

const std::vector<int32_t>& Tokenizer::leading_special_ids() const {
  return data_->prefix_ids;
}

const char* Tokenizer::pre_tokenizer_name() const {
  if (data_->alphabet == Alphabet::kSentencePiece)
    return data_->metaspace.enabled && data_->metaspace.split ? "metaspace-split" : "sentencepiece";
  switch (data_->pattern) {
    case SplitPattern::kQwen2:
      return "qwen2";
    case SplitPattern::kLlama3:
      return "llama3";
    case SplitPattern::kGpt2:
      return data_->digits == TokenizerData::Digits::kEach   ? "smollm"
             : data_->digits == TokenizerData::Digits::kRuns ? "digit-runs+gpt2"
                                                             : "gpt2";
  }
  return "";
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const {
  return data_->added;
}
int32_t Tokenizer::eos_id() const {
  return data_->eos;
}
int32_t Tokenizer::bos_id() const {
  return data_->bos;
}
int32_t Tokenizer::pad_id() const {
  return data_->pad;
}
int32_t Tokenizer::unk_id() const {
  return data_->unk;
}
bool Tokenizer::adds_space_prefix() const {
  const TokenizerData& d = *data_;
  if (d.metaspace.enabled) return d.metaspace.prepend != MetaspaceRule::Prepend::kNever;
  return std::any_of(d.normalizers.begin(), d.normalizers.end(), [](const NormalizerStep& s) {
    return s.kind == NormalizerStep::Kind::kPrepend;
  });
}
const std::vector<int32_t>& Tokenizer::stop_ids() const {
  return data_->stop_ids;
}

std::string StreamDecoder::push(int32_t id) {
  std::string out;
  if (!tokenizer_.is_valid(id) || (skip_special_ && tokenizer_.is_special(id))) return out;
  tokenizer_.append_decoded(id, state_, pending_);
  size_t held = append_utf8_lossy_partial(out, pending_);
  pending_.erase(0, pending_.size() - held);
  return out;
}

std::string StreamDecoder::finish() {
  std::string out;
  append_utf8_lossy(out, pending_);
  pending_.clear();
  state_ = {};
  return out;
}

// ---------------------------------------------------------------------------------------------
// Byte-level alphabet

namespace {

struct ByteLevelTable {
  char32_t chars[256];
  ByteLevelTable() {
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      chars[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
    }
  }
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

}  // namespace

char32_t byte_level_char(unsigned char byte) {
  return byte_level_table().chars[byte];
}

std::string byte_level_string(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(out, byte_level_char(static_cast<unsigned char>(c)));
  return out;
}

}  // namespace loratune::tokenizer
