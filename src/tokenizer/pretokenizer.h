// The pre-tokenizer: splits normalised text into the pieces that BPE encodes one by one.
// The split regexes of tokenizer.json are implemented by hand, with the regex's exact
// leftmost-first, backtracking semantics, on utf8proc character classes. Supported patterns:
//
//   Qwen2   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|
//            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   Llama3  the same with \p{N}{1,3}
//   GPT-2   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//           (also what a ByteLevel pre-tokenizer with use_regex=true applies)
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace loratune::tokenizer {

enum class SplitPattern { kQwen2, kLlama3, kGpt2 };

// The pattern whose regex source is exactly `regex`, if it is one we implement.
std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex);
std::string_view split_pattern_regex(SplitPattern pattern);

struct Piece {
  uint32_t begin;  // byte offsets into the text
  uint32_t end;
};

// Splits valid UTF-8 `text` into pieces that cover it exactly, in order. `pieces` is cleared
// first; pass the same vector again to avoid allocations. Text must be under 4 GiB.
void pre_tokenize(SplitPattern pattern, std::string_view text, std::vector<Piece>& pieces);

}  // namespace loratune::tokenizer
