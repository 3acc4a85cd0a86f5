#include "tokenizer/pretokenizer.h"

#include "tokenizer/unicode.h"

namespace loratune::tokenizer {

namespace {

constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kGpt2Regex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

// The text as code points: class, value and byte offset of each (one extra offset at the end).
struct Decoded {
  std::vector<CharClass> cls;
  std::vector<char32_t> cp;
  std::vector<uint32_t> off;
};

void decode(std::string_view text, Decoded& d) {
  d.cls.clear();
  d.cp.clear();
  d.off.clear();
  size_t i = 0;
  while (i < text.size()) {
    d.off.push_back(static_cast<uint32_t>(i));
    char32_t cp = next_code_point(text, i);
    d.cp.push_back(cp);
    d.cls.push_back(char_class(cp));
  }
  d.off.push_back(static_cast<uint32_t>(text.size()));
}

bool is_space(CharClass c) {
  return c == CharClass::kSpace || c == CharClass::kNewline;
}

// Case-insensitive match of one ASCII letter as the regex engine does it (Unicode simple case
// folding: U+017F LATIN SMALL LETTER LONG S folds to 's').
bool fold_equals(char32_t cp, char lower, bool ignore_case) {
  if (cp == static_cast<char32_t>(lower)) return true;
  if (!ignore_case) return false;
  if (cp == static_cast<char32_t>(lower - 'a' + 'A')) return true;
  return lower == 's' && cp == 0x17F;
}

// Length in code points of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0.
size_t contraction(const Decoded& d, size_t i, size_t n, bool ignore_case) {
  if (d.cp[i] != '\'' || i + 1 >= n) return 0;
  char32_t a = d.cp[i + 1];
  for (char c : {'s', 't'})
    if (fold_equals(a, c, ignore_case)) return 2;
  if (i + 2 < n) {
    char32_t b = d.cp[i + 2];
    if (fold_equals(a, 'r', ignore_case) && fold_equals(b, 'e', ignore_case)) return 3;
    if (fold_equals(a, 'v', ignore_case) && fold_equals(b, 'e', ignore_case)) return 3;
  }
  if (fold_equals(a, 'm', ignore_case)) return 2;
  if (i + 2 < n && fold_equals(a, 'l', ignore_case) && fold_equals(d.cp[i + 2], 'l', ignore_case))
    return 3;
  if (fold_equals(a, 'd', ignore_case)) return 2;
  return 0;
}

size_t run_end(const Decoded& d, size_t i, size_t n, CharClass c) {
  while (i < n && d.cls[i] == c) ++i;
  return i;
}

size_t space_run_end(const Decoded& d, size_t i, size_t n) {
  while (i < n && is_space(d.cls[i])) ++i;
  return i;
}

// End (code point index) of the match that starts at i; always > i.
size_t match_qwen2(const Decoded& d, size_t i, size_t n, size_t max_digits) {
  const std::vector<CharClass>& cls = d.cls;
  if (size_t k = contraction(d, i, n, true)) return i + k;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (cls[i] == CharClass::kLetter) return run_end(d, i, n, CharClass::kLetter);
  if (cls[i] != CharClass::kNewline && cls[i] != CharClass::kNumber && i + 1 < n &&
      cls[i + 1] == CharClass::kLetter)
    return run_end(d, i + 1, n, CharClass::kLetter);
  // \p{N}{1,max_digits}
  if (cls[i] == CharClass::kNumber) {
    size_t j = i + 1;
    while (j < n && j - i < max_digits && cls[j] == CharClass::kNumber) ++j;
    return j;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  size_t k = i;
  if (d.cp[k] == ' ' && k + 1 < n && cls[k + 1] == CharClass::kOther) ++k;
  if (cls[k] == CharClass::kOther) {
    size_t j = run_end(d, k, n, CharClass::kOther);
    return run_end(d, j, n, CharClass::kNewline);
  }
  // Only white space is left: \s*[\r\n]+ | \s+(?!\S) | \s+
  size_t e = space_run_end(d, i, n);
  for (size_t j = e; j > i; --j)
    if (cls[j - 1] == CharClass::kNewline) return j;
  if (e == n || e - i == 1) return e;
  return e - 1;
}

size_t match_gpt2(const Decoded& d, size_t i, size_t n) {
  const std::vector<CharClass>& cls = d.cls;
  if (size_t k = contraction(d, i, n, false)) return i + k;
  size_t k = (d.cp[i] == ' ' && i + 1 < n) ? i + 1 : i;
  //  ?\p{L}+ |  ?\p{N}+ |  ?[^\s\p{L}\p{N}]+
  for (CharClass c : {CharClass::kLetter, CharClass::kNumber, CharClass::kOther}) {
    if (cls[i] == c) return run_end(d, i, n, c);
    if (k > i && cls[k] == c) return run_end(d, k, n, c);
  }
  // \s+(?!\S) | \s+
  size_t e = space_run_end(d, i, n);
  if (e == n || e - i == 1) return e;
  return e - 1;
}

}  // namespace

std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex) {
  if (regex == kQwen2Regex) return SplitPattern::kQwen2;
  if (regex == kLlama3Regex) return SplitPattern::kLlama3;
  if (regex == kGpt2Regex) return SplitPattern::kGpt2;
  return std::nullopt;
}

std::string_view split_pattern_regex(SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::kQwen2:
      return kQwen2Regex;
    case SplitPattern::kLlama3:
      return kLlama3Regex;
    case SplitPattern::kGpt2:
      return kGpt2Regex;
  }
  return kQwen2Regex;
}

void pre_tokenize(SplitPattern pattern, std::string_view text, std::vector<Piece>& pieces) {
  thread_local Decoded d;
  pieces.clear();
  decode(text, d);
  size_t n = d.cls.size();
  size_t i = 0;
  while (i < n) {
    size_t j;
    switch (pattern) {
      case SplitPattern::kQwen2:
        j = match_qwen2(d, i, n, 1);
        break;
      case SplitPattern::kLlama3:
        j = match_qwen2(d, i, n, 3);
        break;
      default:
        j = match_gpt2(d, i, n);
        break;
    }
    pieces.push_back({d.off[i], d.off[j]});
    i = j;
  }
}

}  // namespace loratune::tokenizer
