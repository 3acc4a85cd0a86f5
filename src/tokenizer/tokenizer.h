// BPE tokenizers from tokenizer.json, id-for-id identical to Hugging Face `tokenizers`: the
// byte-level ones (Qwen2, Qwen3, Llama 3) and the SentencePiece-style ones with byte fallback
// (Llama 2, TinyLlama, Mistral).
//
// Encoding: invalid UTF-8 is first repaired (each maximal invalid subpart becomes U+FFFD, like
// Python's errors="replace"); added tokens with normalized=false are matched on the raw text
// (leftmost-longest, as tokenizers does); the text between them is normalised (NFC, or
// Prepend/Replace of "▁"), pre-tokenized (the split regex, or Metaspace) and merged by BPE
// rank. The post-processor's special tokens (a BOS) come only with add_special_tokens.
// Decoding: ids -> bytes -> UTF-8 with invalid sequences replaced by U+FFFD; ids that name no
// token are skipped, as tokenizers does; the decoder's leading-space rules apply.
//
// A Tokenizer is immutable after loading, cheap to copy (shared state) and safe to use from
// several threads at once; each thread keeps its own word cache.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace loratune::tokenizer {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;  // matched after normalisation instead of on the raw text
};

struct EncodeOptions {
  // Treat the text of special tokens ("<|im_start|>") as plain text, like Hugging Face
  // split_special_tokens=True. Non-special added tokens are still matched.
  bool split_special = false;
  // The post-processor's tokens around the text (Llama's BOS), like Hugging Face
  // add_special_tokens=True.
  bool add_special_tokens = false;
  // The text continues earlier text (an answer after its prompt): SentencePiece-style
  // tokenizers put no "▁" in front of it, so the two parts decode to the joined text.
  bool continuation = false;
};

class TokenizerData;

class Tokenizer {
 public:
  // Loads from a model folder: tokenizer.json if present, else vocab.json + merges.txt
  // (+ added_tokens.json); special tokens and flags from tokenizer_config.json, with
  // eos/bos/pad ids falling back to config.json. `path` may also name a tokenizer.json file.
  static Tokenizer load(const std::string& path);
  // Builds from the text of a tokenizer.json; `where` names it in errors.
  static Tokenizer from_json(std::string_view tokenizer_json, const std::string& where);

  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& options = {}) const;
  // Appends the ids of `text` to `ids`.
  void encode_into(std::string_view text, std::vector<int32_t>& ids,
                   const EncodeOptions& options = {}) const;
  // Appends the ids of a prompt: the post-processor's leading tokens (the BOS that
  // tokenizer(text) gives Llama models) and the text, without a second BOS where the text
  // itself starts with one (chat templates write it).
  void encode_prompt_into(std::string_view text, std::vector<int32_t>& ids) const;

  std::string decode(std::span<const int32_t> ids, bool skip_special = false) const;
  // The raw bytes of one token (possibly part of a UTF-8 character); empty for unknown ids.
  std::string_view token_bytes(int32_t id) const;
  // The token as the vocabulary spells it ("Ġworld"), or the added token's text.
  std::string_view token_string(int32_t id) const;
  std::optional<int32_t> token_id(std::string_view token) const;

  bool is_valid(int32_t id) const;
  bool is_special(int32_t id) const;
  // One past the largest id (vocabulary and added tokens).
  int32_t vocab_size() const;
  const std::vector<AddedToken>& added_tokens() const;
  // The BPE merges as token spellings ("Ġ", "t"), by increasing rank.
  std::vector<std::pair<std::string_view, std::string_view>> merges() const;

  // The post-processor's special tokens before a single sequence (Llama's BOS).
  const std::vector<int32_t>& leading_special_ids() const;
  // "qwen2", "llama3" or "gpt2" (the split regex of a byte-level tokenizer; "smollm" with each
  // digit apart first, "digit-runs+gpt2" with numbers apart), or "sentencepiece" (the text
  // between added tokens one word; "metaspace-split": cut at each "▁").
  const char* pre_tokenizer_name() const;

  // Special ids from tokenizer_config.json (or config.json); -1 when there is none.
  int32_t eos_id() const;
  int32_t bos_id() const;
  int32_t pad_id() const;
  // The model's unknown token (unk_token); -1 when there is none.
  int32_t unk_id() const;
  // SentencePiece-style: whether a "▁" goes in front of the text (Prepend, or Metaspace's
  // prepend_scheme other than never).
  bool adds_space_prefix() const;
  // Ids that end generation: eos plus every eos_token_id of config.json.
  const std::vector<int32_t>& stop_ids() const;

 private:
  explicit Tokenizer(std::shared_ptr<const TokenizerData> data) : data_(std::move(data)) {}
  friend class TokenizerBuilder;
  friend class StreamDecoder;
  struct DecodeState {
    bool first = true;  // no token decoded yet
    int stripped = 0;   // leading spaces stripped so far
  };
  void append_decoded(int32_t id, DecodeState& state, std::string& bytes) const;
  std::shared_ptr<const TokenizerData> data_;
};

// Incremental decoder for streaming generation: push ids one at a time and get back only
// complete characters; bytes of a character split across tokens are held until it is whole.
// The concatenation of all push() results and finish() equals decode() of all ids.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}
  std::string push(int32_t id);
  // The held-back bytes, if any, as U+FFFD; resets the decoder.
  std::string finish();

 private:
  Tokenizer tokenizer_;
  bool skip_special_;
  Tokenizer::DecodeState state_;
  std::string pending_;
};

// The GPT-2 byte-to-unicode table: the printable character that stands for each byte in a
// byte-level vocabulary.
char32_t byte_level_char(unsigned char byte);
// Byte-level spelling of raw bytes ("\n hi" -> "ĊĠhi").
std::string byte_level_string(std::string_view bytes);

// Writes tokenizer.json and tokenizer_config.json of a small byte-level BPE tokenizer into
// `dir` (which must exist): the 256 byte tokens (id = byte value), then one token per merge
// (in order; each merge joins two existing tokens, given as raw bytes), then <|endoftext|>,
// <|im_start|>, <|im_end|>. Pre-tokenizer and normaliser are Qwen2's; eos and pad are
// <|endoftext|>. Load it with Tokenizer::load(dir).
void write_byte_level_tokenizer(
    const std::string& dir, const std::vector<std::pair<std::string, std::string>>& merges = {});

}  // namespace loratune::tokenizer
