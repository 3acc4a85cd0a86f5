// UTF-8 and Unicode helpers for the tokenizer: decoding, lossy repair (U+FFFD for invalid
// sequences, as Rust's from_utf8_lossy and Python's errors="replace"), NFC normalisation and
// the character classes the pre-tokenizer regexes use. Properties come from utf8proc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace loratune::tokenizer {

// Character classes of the pre-tokenizer regexes: \p{L}, \p{N}, \s (White_Space), with \r and
// \n apart because the Qwen2 pattern names them.
enum class CharClass : uint8_t { kOther, kLetter, kNumber, kSpace, kNewline };

CharClass char_class(char32_t cp);

// Decodes one code point at s[i] of a string already known to be valid UTF-8; advances i.
inline char32_t next_code_point(std::string_view s, size_t& i) {
  unsigned char c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) {
    ++i;
    return c;
  }
  if (c < 0xE0) {
    char32_t cp = ((c & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    i += 2;
    return cp;
  }
  if (c < 0xF0) {
    char32_t cp = ((c & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                  (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
    i += 3;
    return cp;
  }
  char32_t cp = ((c & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
                ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) |
                (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
  i += 4;
  return cp;
}

// Appends the UTF-8 encoding of a Unicode scalar value.
void append_utf8(std::string& out, char32_t cp);

// Length of the longest prefix of `s` that is valid UTF-8.
size_t valid_utf8_prefix(std::string_view s);
inline bool is_valid_utf8(std::string_view s) {
  return valid_utf8_prefix(s) == s.size();
}

// Appends `bytes` to `out`, replacing every maximal invalid subpart with U+FFFD (the Unicode
// "substitution of maximal subparts" practice that Rust's from_utf8_lossy follows).
void append_utf8_lossy(std::string& out, std::string_view bytes);
std::string utf8_lossy(std::string_view bytes);

// Streaming form of append_utf8_lossy: appends to `out` everything in `bytes` that is decided,
// and returns how many trailing bytes were held back because they start a sequence that later
// bytes may still complete (at most 3). Feeding the held bytes again together with the next
// chunk gives the same text as converting everything at once.
size_t append_utf8_lossy_partial(std::string& out, std::string_view bytes);

// NFC normalisation of valid UTF-8. Returns false and leaves `out` untouched when the text is
// already in NFC by a quick check (the common case), so callers can keep using the input.
bool nfc_if_needed(std::string_view text, std::string& out);
std::string nfc(std::string_view text);

}  // namespace loratune::tokenizer
