#include "tokenizer/unicode.h"

#include <utf8proc.h>

#include <cstdlib>
#include <memory>

#include "core/error.h"

namespace loratune::tokenizer {

namespace {

CharClass classify(char32_t cp, const utf8proc_property_t* p) {
  if (cp == '\r' || cp == '\n') return CharClass::kNewline;
  if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x85) return CharClass::kSpace;
  switch (p->category) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
      return CharClass::kLetter;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
      return CharClass::kNumber;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
      return CharClass::kSpace;  // together with the controls above: White_Space
    default:
      return CharClass::kOther;
  }
}

bool is_mark(const utf8proc_property_t* p) {
  return p->category == UTF8PROC_CATEGORY_MN || p->category == UTF8PROC_CATEGORY_MC ||
         p->category == UTF8PROC_CATEGORY_ME;
}

bool has_canonical_decomposition(const utf8proc_property_t* p) {
  return p->decomp_seqindex != UINT16_MAX && p->decomp_type == 0;
}

bool is_hangul(char32_t cp) {
  return (cp >= 0x1100 && cp <= 0x11FF) || (cp >= 0xAC00 && cp <= 0xD7A3);
}

std::string nfc_of(std::string_view text) {
  utf8proc_uint8_t* dest = nullptr;
  utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                   static_cast<utf8proc_ssize_t>(text.size()), &dest,
                   static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  std::unique_ptr<utf8proc_uint8_t, decltype(&std::free)> owned(dest, &std::free);
  if (n < 0)
    throw Error(std::string("NFC normalisation failed: ") + utf8proc_errmsg(n), "tokenizer");
  return std::string(reinterpret_cast<const char*>(dest), static_cast<size_t>(n));
}

// A code point is "NFC-inert" when it is a starter that NFC leaves alone and that can neither
// compose with its neighbours nor be reordered: text made only of such code points is in NFC.
// Composition second elements are all marks or Hangul jamo, so excluding those is enough.
bool nfc_inert(char32_t cp, const utf8proc_property_t* p) {
  if (cp < 0x80) return true;
  if (p->combining_class != 0 || is_mark(p) || is_hangul(cp)) return false;
  if (!has_canonical_decomposition(p)) return true;
  if (cp > 0xFFFF) return false;  // a few rare composites: let the full NFC decide
  std::string one;
  append_utf8(one, cp);
  return nfc_of(one) == one;
}

// Per-BMP-code-point class (low 7 bits) and NFC-inert flag (high bit).
struct BmpTable {
  uint8_t entry[0x10000];
  BmpTable() {
    for (char32_t cp = 0; cp < 0x10000; ++cp) {
      if (cp >= 0xD800 && cp <= 0xDFFF) {
        entry[cp] = static_cast<uint8_t>(CharClass::kOther);
        continue;
      }
      const utf8proc_property_t* p = utf8proc_get_property(static_cast<utf8proc_int32_t>(cp));
      entry[cp] = static_cast<uint8_t>(classify(cp, p)) | (nfc_inert(cp, p) ? 0x80 : 0);
    }
  }
};

const BmpTable& bmp_table() {
  static const BmpTable table;
  return table;
}

// Well-formed UTF-8 (Unicode Table 3-7): the allowed range of the second byte for a lead byte.
// Returns the sequence length, or 0 for a byte that cannot start a sequence.
int sequence_bounds(unsigned char lead, unsigned char& lo, unsigned char& hi) {
  lo = 0x80;
  hi = 0xBF;
  if (lead < 0x80) return 1;
  if (lead < 0xC2) return 0;
  if (lead < 0xE0) return 2;
  if (lead < 0xF0) {
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
    return 3;
  }
  if (lead < 0xF5) {
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
    return 4;
  }
  return 0;
}

// Length of the valid sequence at s[i] (>0), or -(bytes of the maximal invalid subpart), or 0
// when the input ends inside a sequence that could still be completed.
int scan_sequence(std::string_view s, size_t i) {
  unsigned char lo, hi;
  unsigned char lead = static_cast<unsigned char>(s[i]);
  int len = sequence_bounds(lead, lo, hi);
  if (len == 0) return -1;
  for (int k = 1; k < len; ++k) {
    if (i + k >= s.size()) return 0;
    unsigned char c = static_cast<unsigned char>(s[i + k]);
    if (c < lo || c > hi) return -k;
    lo = 0x80;
    hi = 0xBF;
  }
  return len;
}

const char kReplacement[] = "\xEF\xBF\xBD";

}  // namespace

CharClass char_class(char32_t cp) {
  if (cp < 0x10000) return static_cast<CharClass>(bmp_table().entry[cp] & 0x7F);
  return classify(cp, utf8proc_get_property(static_cast<utf8proc_int32_t>(cp)));
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

size_t valid_utf8_prefix(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    // ASCII runs, eight bytes at a time.
    while (i + 8 <= s.size()) {
      uint64_t w;
      __builtin_memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= s.size()) break;
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    int n = scan_sequence(s, i);
    if (n <= 0) return i;
    i += static_cast<size_t>(n);
  }
  return s.size();
}

size_t append_utf8_lossy_partial(std::string& out, std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    size_t valid = valid_utf8_prefix(bytes.substr(i));
    out.append(bytes.data() + i, valid);
    i += valid;
    if (i >= bytes.size()) break;
    int n = scan_sequence(bytes, i);
    if (n == 0) return bytes.size() - i;  // an incomplete sequence at the end: hold it back
    out.append(kReplacement);
    i += static_cast<size_t>(-n);
  }
  return 0;
}

void append_utf8_lossy(std::string& out, std::string_view bytes) {
  size_t held = append_utf8_lossy_partial(out, bytes);
  if (held > 0) out.append(kReplacement);  // a truncated sequence is one maximal subpart
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  append_utf8_lossy(out, bytes);
  return out;
}

bool nfc_if_needed(std::string_view text, std::string& out) {
  const BmpTable& table = bmp_table();
  size_t i = 0;
  bool inert = true;
  while (i < text.size()) {
    unsigned char c = static_cast<unsigned char>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    char32_t cp = next_code_point(text, i);
    if (cp < 0x10000) {
      if (!(table.entry[cp] & 0x80)) {
        inert = false;
        break;
      }
    } else if (!nfc_inert(cp, utf8proc_get_property(static_cast<utf8proc_int32_t>(cp)))) {
      inert = false;
      break;
    }
  }
  if (inert) return false;
  std::string normalised = nfc_of(text);
  if (normalised == text) return false;
  out = std::move(normalised);
  return true;
}

std::string nfc(std::string_view text) {
  std::string out;
  if (!nfc_if_needed(text, out)) return std::string(text);
  return out;
}

}  // namespace loratune::tokenizer
