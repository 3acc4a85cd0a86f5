// Tokenizer tests that need nothing outside the repository: UTF-8 repair, the pre-tokenizer
// against pieces produced by Hugging Face tokenizers, BPE against a naive reference, the
// byte-level tokenizer of our own, streaming decode, malformed files, templates and the CLI.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "core/error.h"
#include "data/template.h"
#include "tokenizer/bpe.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace fs = std::filesystem;
using namespace loratune;
using namespace loratune::tokenizer;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "loratune-tok-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::vector<std::string> pieces_of(SplitPattern pattern, std::string_view text) {
  std::vector<Piece> pieces;
  pre_tokenize(pattern, text, pieces);
  std::vector<std::string> out;
  for (const Piece& p : pieces)
    out.push_back(byte_level_string(text.substr(p.begin, p.end - p.begin)));
  return out;
}

// The byte-level tokenizer with a few merges, loaded through the ordinary path.
Tokenizer small_tokenizer(const fs::path& dir) {
  write_byte_level_tokenizer(dir.string(), {{"h", "e"},
                                            {"l", "l"},
                                            {"he", "ll"},
                                            {"hell", "o"},
                                            {" ", "w"},
                                            {"\xE4", "\xB8"},
                                            {"\xE4\xB8", "\xAD"}});
  return Tokenizer::load(dir.string());
}

std::string write_file(const fs::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
  return path.string();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// UTF-8

TEST(Utf8, LossyReplacesMaximalSubparts) {
  EXPECT_EQ(utf8_lossy("abc"), "abc");
  EXPECT_EQ(utf8_lossy("a\xFF"
                       "b"),
            "a\xEF\xBF\xBD"
            "b");
  // A truncated 3-byte sequence is one subpart; a stray continuation byte is another.
  EXPECT_EQ(utf8_lossy("\xE4\xB8"
                       "x\x80"),
            "\xEF\xBF\xBDx\xEF\xBF\xBD");
  // Surrogates and overlongs: every byte is its own subpart (Unicode 3-7, as Rust does).
  EXPECT_EQ(utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy("\xF0\x9F\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(utf8_lossy("\xF4\x90\x80\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(is_valid_utf8("\xF0\x9F\x98\x80 \xE4\xB8\xAD"));
  EXPECT_FALSE(is_valid_utf8("\xF0\x9F\x98"));
}

TEST(Utf8, PartialDecodingHoldsOnlyCompletableTails) {
  std::string out;
  EXPECT_EQ(append_utf8_lossy_partial(out, "a\xE4\xB8"), 2u);
  EXPECT_EQ(out, "a");
  out.clear();
  EXPECT_EQ(append_utf8_lossy_partial(out, "a\xE4\xB8\xAD"), 0u);
  EXPECT_EQ(out, "a\xE4\xB8\xAD");
  out.clear();
  EXPECT_EQ(append_utf8_lossy_partial(out, "\xE4x"), 0u);  // can never complete
  EXPECT_EQ(out, "\xEF\xBF\xBDx");
}

TEST(Utf8, NfcComposesAndLeavesNfcTextAlone) {
  EXPECT_EQ(nfc("e\xCC\x81"), "\xC3\xA9");                     // e + U+0301 -> é
  EXPECT_EQ(nfc("\xE2\x84\xA6"), "\xCE\xA9");                  // OHM SIGN -> OMEGA (singleton)
  EXPECT_EQ(nfc("\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");  // Hangul L + V -> 가
  EXPECT_EQ(nfc("\xEF\xAC\x81"), "\xEF\xAC\x81");              // ﬁ: compatibility only
  std::string out;
  EXPECT_FALSE(nfc_if_needed("plain ascii, \xE4\xB8\xAD\xE6\x96\x87\xEF\xBC\x8C", out));
  EXPECT_TRUE(nfc_if_needed("a\xCC\x88", out));
  EXPECT_EQ(out, "\xC3\xA4");
}

TEST(Utf8, CharClassesFollowUnicodeProperties) {
  EXPECT_EQ(char_class('a'), CharClass::kLetter);
  EXPECT_EQ(char_class(0x4E2D), CharClass::kLetter);  // 中
  EXPECT_EQ(char_class('7'), CharClass::kNumber);
  EXPECT_EQ(char_class(0x2460), CharClass::kNumber);  // ① (No)
  EXPECT_EQ(char_class(0x00A0), CharClass::kSpace);
  EXPECT_EQ(char_class(0x3000), CharClass::kSpace);
  EXPECT_EQ(char_class(0x0085), CharClass::kSpace);
  EXPECT_EQ(char_class(0x001C), CharClass::kOther);  // not White_Space
  EXPECT_EQ(char_class(0x200B), CharClass::kOther);  // zero width space is Cf
  EXPECT_EQ(char_class('\n'), CharClass::kNewline);
  EXPECT_EQ(char_class(0x1F600), CharClass::kOther);   // emoji
  EXPECT_EQ(char_class(0x20000), CharClass::kLetter);  // CJK extension B
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenizer: expected pieces come from tokenizers' Qwen2 pre-tokenizer (preTokenizeString).

TEST(PreTokenizer, Qwen2MatchesReferencePieces) {
  struct Case {
    std::string text;
    std::vector<std::string> pieces;
  };
  const Case cases[] = {
      {"Hello, world! It's 2024...",
       {"Hello", ",", "Ġworld", "!", "ĠIt", "'s", "Ġ", "2", "0", "2", "4", "..."}},
      {"don'T  stop\n\n  \tnow   ", {"don", "'T", "Ġ", "Ġstop", "ĊĊ", "ĠĠ", "ĉnow", "ĠĠĠ"}},
      {"a\x1C\x1C"
       "b",
       {"a", "ĜĜ", "b"}},
      {"中文，测试。\r\n\r\nOK?!\n", {"ä¸Ńæĸĩ", "ï¼Įæµĭè¯ķ", "ãĢĤčĊčĊ", "OK", "?!Ċ"}},
      {"x\u00A0y\u3000z", {"x", "Âły", "ãĢĢz"}},
      {"  ", {"ĠĠ"}},
      {" \n ", {"ĠĊ", "Ġ"}},
      {"1234 ①② x²", {"1", "2", "3", "4", "Ġ", "âĳł", "âĳ¡", "Ġx", "Â²"}},
      {"'ſab 'LL've", {"'Å¿", "ab", "Ġ'", "LL", "'ve"}},
      {"😀😀 ok", {"ðŁĺĢðŁĺĢ", "Ġok"}},
      {"tab\there", {"tab", "ĉhere"}},
      {"end  ", {"end", "ĠĠ"}},
      {"a \u0301b", {"a", "ĠÌģ", "b"}},
      {"…— ok", {"âĢ¦âĢĶ", "Ġok"}},
  };
  for (const Case& c : cases)
    EXPECT_EQ(pieces_of(SplitPattern::kQwen2, c.text), c.pieces) << c.text;
}

TEST(PreTokenizer, Gpt2AndLlama3Variants) {
  // GPT-2: case-sensitive contractions, a space joins the next run, digits stay together.
  EXPECT_EQ(pieces_of(SplitPattern::kGpt2, "I'M 12345 ok!!\n\nx"),
            (std::vector<std::string>{"I", "'", "M", "Ġ12345", "Ġok", "!!", "Ċ", "Ċ", "x"}));
  EXPECT_EQ(pieces_of(SplitPattern::kGpt2, "don't  go\t\n x"),
            (std::vector<std::string>{"don", "'t", "Ġ", "Ġgo", "ĉĊ", "Ġx"}));
  EXPECT_EQ(pieces_of(SplitPattern::kLlama3, "1234567"),
            (std::vector<std::string>{"123", "456", "7"}));
  EXPECT_EQ(split_pattern_from_regex(split_pattern_regex(SplitPattern::kQwen2)),
            SplitPattern::kQwen2);
  EXPECT_FALSE(split_pattern_from_regex("\\w+").has_value());
}

TEST(PreTokenizer, PiecesCoverTheText) {
  std::mt19937 rng(7);
  const std::vector<std::string> atoms = {"a",      "Z",      "1", " ",      "\t", "\n",
                                          "\r",     "'s",     "'", ",",      "中", "，",
                                          "\u00A0", "\u0301", "😀", "x\u3000"};
  std::vector<Piece> pieces;
  for (int iter = 0; iter < 2000; ++iter) {
    std::string text;
    int n = static_cast<int>(rng() % 20);
    for (int k = 0; k < n; ++k) text += atoms[rng() % atoms.size()];
    for (SplitPattern p : {SplitPattern::kQwen2, SplitPattern::kLlama3, SplitPattern::kGpt2}) {
      pre_tokenize(p, text, pieces);
      uint32_t pos = 0;
      for (const Piece& piece : pieces) {
        ASSERT_EQ(piece.begin, pos);
        ASSERT_GT(piece.end, piece.begin);
        pos = piece.end;
      }
      ASSERT_EQ(pos, text.size());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// BPE

namespace {

// GPT-2's original algorithm: repeatedly take the lowest-ranked adjacent pair and merge every
// occurrence of it from left to right.
std::vector<int32_t> naive_bpe(std::vector<int32_t> syms,
                               const std::vector<std::tuple<int32_t, int32_t, int32_t>>& merges) {
  for (;;) {
    size_t best = merges.size();
    for (size_t k = 0; k + 1 < syms.size(); ++k)
      for (size_t r = 0; r < best; ++r)
        if (std::get<0>(merges[r]) == syms[k] && std::get<1>(merges[r]) == syms[k + 1]) best = r;
    if (best == merges.size()) return syms;
    auto [a, b, m] = merges[best];
    std::vector<int32_t> next;
    for (size_t k = 0; k < syms.size(); ++k) {
      if (k + 1 < syms.size() && syms[k] == a && syms[k + 1] == b) {
        next.push_back(m);
        ++k;
      } else {
        next.push_back(syms[k]);
      }
    }
    syms = next;
  }
}

}  // namespace

TEST(Bpe, FlatAndHeapAgreeWithNaiveReference) {
  std::mt19937 rng(3);
  for (int trial = 0; trial < 20; ++trial) {
    // Alphabet 'a'..'d' = ids 0..3; random merges build tokens 4, 5, ...
    BpeModel bpe;
    int32_t bytes[256];
    std::fill(std::begin(bytes), std::end(bytes), -1);
    for (int c = 0; c < 4; ++c) bytes['a' + c] = c;
    bpe.set_byte_tokens(bytes, -1, false);
    std::vector<std::tuple<int32_t, int32_t, int32_t>> merges;
    int32_t next_id = 4;
    for (int r = 0; r < 30; ++r) {
      int32_t a = static_cast<int32_t>(rng() % next_id), b = static_cast<int32_t>(rng() % next_id);
      merges.emplace_back(a, b, next_id);
      bpe.add_merge(a, b, next_id, static_cast<uint32_t>(r));
      ++next_id;
    }
    // Duplicate pairs: the later merge wins; keep the naive list consistent with that.
    std::vector<std::tuple<int32_t, int32_t, int32_t>> effective(merges.size(), {-1, -1, -1});
    for (size_t r = 0; r < merges.size(); ++r) {
      for (size_t q = 0; q < r; ++q)
        if (std::get<0>(effective[q]) == std::get<0>(merges[r]) &&
            std::get<1>(effective[q]) == std::get<1>(merges[r]))
          effective[q] = {-1, -1, -1};
      effective[r] = merges[r];
    }
    for (int w = 0; w < 200; ++w) {
      std::string word;
      size_t len = 1 + rng() % (w % 10 == 0 ? 600 : 24);
      for (size_t k = 0; k < len; ++k) word.push_back(static_cast<char>('a' + rng() % 4));
      std::vector<int32_t> init;
      for (char c : word) init.push_back(c - 'a');
      std::vector<int32_t> flat, heap;
      bpe.encode_word_flat(word, flat);
      bpe.encode_word_heap(word, heap);
      ASSERT_EQ(flat, naive_bpe(init, effective)) << word;
      ASSERT_EQ(heap, flat) << word;
    }
  }
}

TEST(Bpe, WordCacheReturnsWhatWasStored) {
  WordCache cache;
  std::vector<int32_t> out;
  EXPECT_FALSE(cache.lookup("hello", hash_bytes("hello"), out));
  const int32_t ids[] = {7, 8, 9};
  cache.insert("hello", hash_bytes("hello"), ids, 3);
  EXPECT_TRUE(cache.lookup("hello", hash_bytes("hello"), out));
  EXPECT_EQ(out, (std::vector<int32_t>{7, 8, 9}));
  EXPECT_FALSE(cache.lookup("hellp", hash_bytes("hellp"), out));
  for (int i = 0; i < 100000; ++i) {  // overflows: the cache clears itself and keeps working
    std::string w = "w" + std::to_string(i);
    cache.insert(w, hash_bytes(w), ids, 1);
  }
  out.clear();
  EXPECT_TRUE(cache.lookup("w99999", hash_bytes("w99999"), out));
  EXPECT_EQ(out, (std::vector<int32_t>{7}));
}

// ---------------------------------------------------------------------------------------------
// The byte-level tokenizer (what the built-in tiny model ships)

TEST(ByteLevelTokenizer, RoundTripsThroughTheOrdinaryLoader) {
  TempDir tmp;
  Tokenizer tok = small_tokenizer(tmp.path);
  // 256 bytes, 7 merge tokens, 3 special tokens.
  EXPECT_EQ(tok.vocab_size(), 256 + 7 + 3);
  const int32_t hello = 259, eot = 263, im_start = 264, im_end = 265;
  EXPECT_EQ(tok.token_id("<|endoftext|>"), eot);
  EXPECT_EQ(tok.eos_id(), eot);
  EXPECT_EQ(tok.pad_id(), eot);
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_EQ(tok.encode("hello"), (std::vector<int32_t>{hello}));
  // " hello" is one piece; no merge joins ' ' and "hello".
  EXPECT_EQ(tok.encode("hello hello"), (std::vector<int32_t>{hello, ' ', hello}));
  EXPECT_EQ(tok.encode(" world"), (std::vector<int32_t>{260, 'o', 'r', 'l', 'd'}));
  EXPECT_EQ(tok.encode("中"), (std::vector<int32_t>{262}));
  EXPECT_EQ(tok.encode("<|im_start|>hello<|im_end|>"),
            (std::vector<int32_t>{im_start, hello, im_end}));
  EncodeOptions plain;
  plain.split_special = true;
  std::vector<int32_t> split = tok.encode("<|im_end|>", plain);
  EXPECT_EQ(split.size(), 10u);
  EXPECT_EQ(tok.decode(split), "<|im_end|>");

  std::vector<int32_t> ids = tok.encode("hello\n<|endoftext|>");
  EXPECT_EQ(tok.decode(ids), "hello\n<|endoftext|>");
  EXPECT_EQ(tok.decode(ids, true), "hello\n");
  EXPECT_TRUE(tok.is_special(eot));
  EXPECT_FALSE(tok.is_special(hello));
  EXPECT_EQ(tok.token_string(260), "Ġw");
  EXPECT_EQ(tok.token_bytes(260), " w");
}

TEST(ByteLevelTokenizer, RejectsMergesOfUnknownTokens) {
  TempDir tmp;
  EXPECT_THROW(write_byte_level_tokenizer(tmp.path.string(), {{"ab", "c"}}), Error);
  EXPECT_THROW(write_byte_level_tokenizer((tmp.path / "missing").string()), Error);
}

TEST(ByteLevelTokenizer, EncodeNormalisesAndDecodeInverts) {
  TempDir tmp;
  Tokenizer tok = small_tokenizer(tmp.path);
  std::mt19937 rng(11);
  const std::vector<std::string> atoms = {"hello",  " ",          "\n", "e\u0301",     "中",
                                          "😀",      "<|im_end|>", "'s", "\t",          "1",
                                          "\u00A0", ",",          "ﬁ",  "\u1100\u1161"};
  for (int iter = 0; iter < 500; ++iter) {
    std::string text;
    int n = static_cast<int>(rng() % 12);
    for (int k = 0; k < n; ++k) text += atoms[rng() % atoms.size()];
    std::vector<int32_t> ids = tok.encode(text);
    ASSERT_EQ(tok.decode(ids), nfc(text)) << text;
  }
}

TEST(ByteLevelTokenizer, InvalidUtf8IsReplacedBeforeEncoding) {
  TempDir tmp;
  Tokenizer tok = small_tokenizer(tmp.path);
  EXPECT_EQ(tok.encode("a\xFF"
                       "b\xE4\xB8"),
            tok.encode("a\xEF\xBF\xBD"
                       "b\xEF\xBF\xBD"));
  EXPECT_EQ(tok.decode(tok.encode("\xC0")), "\xEF\xBF\xBD");
}

TEST(ByteLevelTokenizer, DecodeReplacesBrokenBytesAndSkipsUnknownIds) {
  TempDir tmp;
  Tokenizer tok = small_tokenizer(tmp.path);
  const std::vector<int32_t> half = {0xE4, 0xB8, 'x'};  // 中 without its last byte
  EXPECT_EQ(tok.decode(half), "\xEF\xBF\xBDx");
  const std::vector<int32_t> unknown = {'a', -5, 100000, 'b'};
  EXPECT_EQ(tok.decode(unknown), "ab");
  EXPECT_FALSE(tok.is_valid(100000));
  EXPECT_EQ(tok.token_string(-1), "");
}

TEST(ByteLevelTokenizer, ConcurrentEncodingGivesTheSameIds) {
  TempDir tmp;
  const Tokenizer tok = small_tokenizer(tmp.path);
  std::vector<std::string> texts;
  std::mt19937 rng(13);
  const std::vector<std::string> atoms = {"hello", " world", "\n", "中文", "'s", "12", " ", "é"};
  for (int i = 0; i < 400; ++i) {
    std::string t;
    for (int k = 0; k < 30; ++k) t += atoms[rng() % atoms.size()];
    texts.push_back(t);
  }
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& t : texts) expected.push_back(tok.encode(t));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int w = 0; w < 4; ++w)
    threads.emplace_back([&, w] {
      const Tokenizer copy = tok;  // copies share the loaded state
      for (int rep = 0; rep < 5; ++rep)
        for (size_t i = w; i < texts.size(); i += 2)
          if (copy.encode(texts[i]) != expected[i]) ++mismatches[w];
    });
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

TEST(StreamDecoder, NeverEmitsHalfACharacterAndMatchesDecode) {
  TempDir tmp;
  Tokenizer tok = small_tokenizer(tmp.path);
  std::mt19937 rng(5);
  for (int iter = 0; iter < 2000; ++iter) {
    std::vector<int32_t> ids;
    int n = static_cast<int>(rng() % 16);
    for (int k = 0; k < n; ++k) {
      // Mostly the bytes of real characters, sometimes a random byte or a special token.
      uint32_t r = rng() % 10;
      if (r < 6) {
        for (char c : std::string(r < 3 ? "中" : "😀")) ids.push_back(static_cast<unsigned char>(c));
      } else if (r < 9) {
        ids.push_back(static_cast<int32_t>(rng() % 256));
      } else {
        ids.push_back(263 + static_cast<int32_t>(rng() % 3));
      }
    }
    for (bool skip : {false, true}) {
      StreamDecoder stream(tok, skip);
      std::string streamed;
      for (int32_t id : ids) {
        std::string part = stream.push(id);
        ASSERT_TRUE(is_valid_utf8(part));
        streamed += part;
      }
      streamed += stream.finish();
      ASSERT_EQ(streamed, tok.decode(ids, skip));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Malformed tokenizer files

namespace {

std::string tiny_json(const std::string& vocab, const std::string& merges,
                      const std::string& extra = "") {
  return R"({"normalizer":{"type":"NFC"},
  "pre_tokenizer":{"type":"Sequence","pretokenizers":[
    {"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},
    {"type":"ByteLevel","add_prefix_space":false,"use_regex":false}]},
  "decoder":{"type":"ByteLevel"},)" +
         extra + R"("model":{"type":"BPE","vocab":)" + vocab + R"(,"merges":)" + merges + "}}";
}

std::string error_of(const std::string& json) {
  try {
    Tokenizer::from_json(json, "test.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(TokenizerJson, WellFormedTinyFileLoads) {
  Tokenizer tok = Tokenizer::from_json(tiny_json(R"({"a":0,"b":1,"ab":2})", R"(["a b"])"), "t");
  EXPECT_EQ(tok.encode("abba"), (std::vector<int32_t>{2, 1, 0}));
  // Merges may also be written as pairs.
  Tokenizer pairs =
      Tokenizer::from_json(tiny_json(R"({"a":0,"b":1,"ab":2})", R"([["a","b"]])"), "t");
  EXPECT_EQ(pairs.encode("ab"), (std::vector<int32_t>{2}));
  // Bytes without a token are dropped, as tokenizers does without an unk_token.
  EXPECT_EQ(tok.encode("a c"), (std::vector<int32_t>{0}));
}

TEST(TokenizerJson, IgnoreMergesTakesWholeWordsFromTheVocabulary) {
  const std::string vocab = R"({"a":0,"b":1,"c":2,"ab":3,"abc":4})";
  Tokenizer merging = Tokenizer::from_json(tiny_json(vocab, R"(["a b"])"), "t");
  EXPECT_EQ(merging.encode("abc"), (std::vector<int32_t>{3, 2}));
  Tokenizer whole = Tokenizer::from_json(tiny_json(vocab, R"(["a b"],"ignore_merges":true)"), "t");
  EXPECT_EQ(whole.encode("abc cab"), (std::vector<int32_t>{4, 2, 3}));  // no token for " "
}

TEST(TokenizerJson, MalformedFilesGiveClearErrors) {
  EXPECT_NE(error_of("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("[]").find("JSON object"), std::string::npos);
  EXPECT_NE(error_of("{}").find("missing \"model\""), std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0,"b":1})", R"(["a c"])")).find("unknown token 'c'"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0,"b":1})", R"(["a b"])")).find("unknown token 'ab'"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0,"b":1,"ab":2})", R"(["a  b"])")).find("one space"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0,"b":1,"ab":2})", R"([42])")).find("a merge must be"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":-1})", "[]")).find("out of range"), std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":"x"})", "[]")).find("must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0,"b":0})", "[]")).find("used twice"), std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0,"b":99999999})", "[]")).find("out of range"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0,"b":9999999})", "[]")).find("too sparse"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0})", R"({"a":1})")).find("must be a list"),
            std::string::npos);
  EXPECT_NE(error_of(tiny_json(R"({"a":0})", "[]", R"("added_tokens":[{"id":1}],)"))
                .find("non-empty \"content\""),
            std::string::npos);
  std::string bad_regex = tiny_json(R"({"a":0})", "[]");
  bad_regex.replace(bad_regex.find("(?i:"), 4, "(?x:");
  EXPECT_NE(error_of(bad_regex).find("unsupported pre-tokenizer regex"), std::string::npos);
  std::string wordpiece = tiny_json(R"({"a":0})", "[]");
  wordpiece.replace(wordpiece.find("\"BPE\""), 5, "\"WordPiece\"");
  EXPECT_NE(error_of(wordpiece).find("unsupported model type"), std::string::npos);
}

namespace {

// A SentencePiece-style tokenizer.json: "▁" for spaces, byte tokens for 'A' and the two bytes
// of "é", Llama 2's normalizer and decoder; `extra` (",\"decoder\": ...") replaces members (the
// JSON parser keeps the last of equal keys).
std::string sentencepiece_json(const std::string& model_extra, const std::string& extra = "") {
  return R"({"normalizer":{"type":"Sequence","normalizers":[
    {"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
  "pre_tokenizer":null,
  "added_tokens":[{"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true}],
  "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},
    {"Sequence":{"id":"A","type_id":0}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
  "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},
    {"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
  "model":{"type":"BPE","unk_token":"<unk>","fuse_unk":true,)" +
         model_extra +
         R"("vocab":{"<unk>":0,"<s>":1,"<0x41>":2,"<0xC3>":3,"<0xA9>":4,"▁":5,"a":6,"b":7,
    "▁a":8,"ab":9,"▁ab":10},"merges":["▁ a","a b","▁a b"]})" +
         extra + "}";
}

}  // namespace

TEST(TokenizerJson, SentencePieceCharactersByteFallbackAndUnknowns) {
  const Tokenizer tok = Tokenizer::from_json(sentencepiece_json(R"("byte_fallback":true,)"), "t");
  using Ids = std::vector<int32_t>;
  EXPECT_EQ(tok.encode("ab ab"), (Ids{10, 10}));     // one word "▁ab▁ab"
  EXPECT_EQ(tok.encode("b ab"), (Ids{5, 7, 10}));    // ▁ b ▁a b, then ▁a b
  EXPECT_EQ(tok.encode("aab"), (Ids{8, 9}));         // ▁a a b: the lower rank first
  EXPECT_EQ(tok.encode("aé"), (Ids{8, 3, 4}));       // é is not a token: its two byte tokens
  EXPECT_EQ(tok.encode("A"), (Ids{5, 2}));           // an ASCII byte token, one-byte word
  EXPECT_EQ(tok.encode("a中文b"), (Ids{8, 0, 7}));   // no byte tokens for 中文: one fused unk
  EXPECT_EQ(tok.decode(Ids{10, 10}), "ab ab");       // Strip takes the prepended space
  EXPECT_EQ(tok.decode(Ids{8, 3, 4}), "aé");         // byte tokens decode to their bytes
  EXPECT_EQ(tok.decode(Ids{1, 8}, false), "<s> a");  // the Strip acts on the whole text
  EncodeOptions bos;
  bos.add_special_tokens = true;
  EXPECT_EQ(tok.encode("a", bos), (Ids{1, 8}));
  EXPECT_EQ(tok.bos_id(), -1);  // no tokenizer_config: the template alone adds it
  // Without byte_fallback, characters outside the vocabulary are unknown.
  const Tokenizer strict = Tokenizer::from_json(sentencepiece_json(""), "t");
  EXPECT_EQ(strict.encode("aé"), (Ids{8, 0}));
}

TEST(TokenizerJson, SentencePieceComponentsOutsideTheImplementationAreRefused) {
  auto err = [](const std::string& extra) { return error_of(sentencepiece_json("", extra)); };
  EXPECT_NE(err(R"(,"decoder":{"type":"WordPiece"})").find("unsupported decoder"),
            std::string::npos);
  EXPECT_NE(
      err(R"(,"decoder":{"type":"Sequence","decoders":[{"type":"Strip","content":" ","start":1,"stop":0}]})")
          .find("Strip of leading spaces after Fuse"),
      std::string::npos);
  EXPECT_NE(err(R"(,"normalizer":{"type":"Replace","pattern":{"Regex":" +"},"content":"▁"})")
                .find("{\"String\": ...}"),
            std::string::npos);
  EXPECT_NE(err(R"(,"normalizer":{"type":"NFKC"})").find("unsupported normalizer"),
            std::string::npos);
  EXPECT_NE(err(R"(,"pre_tokenizer":{"type":"Whitespace"})").find("for SentencePiece tokens"),
            std::string::npos);
  EXPECT_NE(
      err(R"(,"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"twice"})")
          .find("prepend_scheme"),
      std::string::npos);
  EXPECT_NE(
      err(R"(,"post_processor":{"type":"RobertaProcessing"})").find("unsupported post_processor"),
      std::string::npos);
  EXPECT_NE(
      err(R"(,"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<x>"}},{"Sequence":{"id":"A"}}]})")
          .find("special_tokens lacks"),
      std::string::npos);
  EXPECT_NE(err(R"(,"post_processor":{"type":"TemplateProcessing","single":[]})")
                .find("lacks the sequence"),
            std::string::npos);
  // Byte fallback needs SentencePiece tokens: with a ByteLevel decoder it is refused.
  EXPECT_NE(error_of(tiny_json(R"({"a":0})", R"([],"byte_fallback":true)"))
                .find("byte_fallback with a ByteLevel decoder"),
            std::string::npos);
}

TEST(TokenizerJson, LoadErrorsNameTheFolder) {
  TempDir tmp;
  try {
    Tokenizer::load((tmp.path / "nope").string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no such model folder"), std::string::npos);
  }
  try {
    Tokenizer::load(tmp.path.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no tokenizer in the model folder"), std::string::npos);
  }
  write_file(tmp.path / "tokenizer.json", tiny_json(R"({"a":0})", "[]"));
  write_file(tmp.path / "tokenizer_config.json", R"({"eos_token": "<|nope|>"})");
  try {
    Tokenizer::load(tmp.path.string());
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("eos_token '<|nope|>' is not a token"), std::string::npos);
  }
}

TEST(TokenizerJson, SpecialIdsFallBackToConfigJson) {
  TempDir tmp;
  write_file(tmp.path / "tokenizer.json",
             tiny_json(R"({"a":0,"b":1})", "[]",
                       R"("added_tokens":[{"id":2,"content":"<e>","special":true}],)"));
  write_file(tmp.path / "config.json", R"({"eos_token_id": [2, 1], "bos_token_id": 0})");
  Tokenizer tok = Tokenizer::load(tmp.path.string());
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.bos_id(), 0);
  EXPECT_EQ(tok.pad_id(), -1);
  EXPECT_EQ(tok.stop_ids(), (std::vector<int32_t>{2, 1}));
  EXPECT_EQ(tok.encode("a<e>b"), (std::vector<int32_t>{0, 2, 1}));
}

TEST(TokenizerJson, AddedTokenStripAndSingleWordRules) {
  Tokenizer tok = Tokenizer::from_json(
      tiny_json(R"({"a":0,"b":1,"Ġ":2})", "[]",
                R"("added_tokens":[{"id":3,"content":"<L>","lstrip":true,"special":true},
                    {"id":4,"content":"<R>","rstrip":true,"special":true},
                    {"id":5,"content":"ab","single_word":true,"special":false,"normalized":false}],)"),
      "t");
  EXPECT_EQ(tok.encode("a  <L>b"), (std::vector<int32_t>{0, 3, 1}));
  EXPECT_EQ(tok.encode("a<R>  b"), (std::vector<int32_t>{0, 4, 1}));
  EXPECT_EQ(tok.encode("ab a"), (std::vector<int32_t>{5, 2, 0}));
  EXPECT_EQ(tok.encode("aab"), (std::vector<int32_t>{0, 0, 1}));  // inside a word: not matched
}

// ---------------------------------------------------------------------------------------------
// Templates

TEST(Template, SeedFormat) {
  using namespace loratune::data;
  PromptParts with = apply_template(TemplateKind::kSeed, {"Translate", "hola", "hello", ""});
  EXPECT_EQ(with.prompt, "Instruction: Translate\nInput: hola\nOutput: ");
  EXPECT_EQ(with.completion, "hello");
  PromptParts without = apply_template(TemplateKind::kSeed, {"Say hi", "", "hi", ""});
  EXPECT_EQ(without.prompt, "Instruction: Say hi\nOutput: ");
  EXPECT_EQ(generation_prompt(TemplateKind::kSeed, "Say hi"), "Instruction: Say hi\nOutput: ");
  EXPECT_STREQ(template_end_token(TemplateKind::kSeed), "<|endoftext|>");
}

TEST(Template, ChatMLFormat) {
  using namespace loratune::data;
  PromptParts p = apply_template(TemplateKind::kChatML, {"Translate", "hola", "hello", ""});
  EXPECT_EQ(p.prompt,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nTranslate\nhola<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(p.completion, "hello");
  EXPECT_EQ(generation_prompt(TemplateKind::kChatML, "Hi", "Be brief."),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\n");
  EXPECT_STREQ(template_end_token(TemplateKind::kChatML), "<|im_end|>");
  EXPECT_EQ(parse_template_kind("chatml"), TemplateKind::kChatML);
  EXPECT_THROW(parse_template_kind("vicuna"), UsageError);
}

// Llama 3's chat template (its tokenizer_config.json's Jinja, rendered by hand): begin of
// text, header-wrapped turns with trimmed contents, each ended by <|eot_id|>.
TEST(Template, Llama3Format) {
  using namespace loratune::data;
  PromptParts p = apply_template(TemplateKind::kLlama3, {"Translate ", "hola", "hello", ""});
  EXPECT_EQ(p.prompt,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nTranslate \nhola"
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(p.completion, "hello");
  const std::pair<std::string, std::string> turns[] = {{"Hi", " Hello! "}};
  Example ex{"More", "", "", "Be brief."};
  EXPECT_EQ(apply_template_with_history(TemplateKind::kLlama3, ex, turns).prompt,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nMore<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_STREQ(template_end_token(TemplateKind::kLlama3), "<|eot_id|>");
  EXPECT_TRUE(template_has_end_token(TemplateKind::kLlama3));
  EXPECT_FALSE(template_has_end_token(TemplateKind::kSeed));
  EXPECT_EQ(parse_template_kind("llama3"), TemplateKind::kLlama3);
  EXPECT_STREQ(template_name(TemplateKind::kLlama3), "llama3");
}

TEST(Template, AlpacaFormat) {
  using namespace loratune::data;
  PromptParts with = apply_template(TemplateKind::kAlpaca, {"Translate", "hola", "hello", ""});
  EXPECT_EQ(with.prompt,
            "Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nTranslate\n\n### Input:\nhola\n\n### Response:\n");
  EXPECT_EQ(with.completion, "hello");
  EXPECT_EQ(generation_prompt(TemplateKind::kAlpaca, "Say hi"),
            "Below is an instruction that describes a task. Write a response that appropriately "
            "completes the request.\n\n### Instruction:\nSay hi\n\n### Response:\n");
  EXPECT_STREQ(template_end_token(TemplateKind::kAlpaca), "<|endoftext|>");
  EXPECT_EQ(parse_template_kind("alpaca"), TemplateKind::kAlpaca);
  EXPECT_STREQ(template_name(TemplateKind::kAlpaca), "alpaca");
}

// ---------------------------------------------------------------------------------------------
// CLI

namespace {

struct CliRun {
  int status;
  std::string out;
};

CliRun run_cli(const std::string& args) {
  std::string cmd = std::string(LORATUNE_BINARY) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int st = ::pclose(p);
  return {WIFEXITED(st) ? WEXITSTATUS(st) : -1, out};
}

}  // namespace

TEST(TokenizeCli, EncodesDecodesAndReportsErrors) {
  TempDir tmp;
  small_tokenizer(tmp.path);
  const std::string model = "--model " + tmp.path.string();
  CliRun r = run_cli("tokenize " + model + " --text 'hello world' --ids-only");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out, "[259,260,111,114,108,100]\n");
  r = run_cli("tokenize " + model + " --text 'hello<|im_end|>'");
  EXPECT_EQ(r.out, "{\"ids\":[259,265],\"tokens\":[\"hello\",\"<|im_end|>\"]}\n");
  r = run_cli("tokenize " + model + " --decode 259,260,265");
  EXPECT_EQ(r.out, "hello w<|im_end|>\n");
  r = run_cli("tokenize " + model + " --decode 259,265 --skip-special-tokens");
  EXPECT_EQ(r.out, "hello\n");

  std::string lines = write_file(tmp.path / "in.jsonl",
                                 "\"hello\"\n{\"text\":\"he\"}\n"
                                 "{\"instruction\":\"hello\",\"input\":\"\",\"output\":\"a\"}\n");
  r = run_cli("tokenize " + model + " --file " + lines + " --jsonl --ids-only");
  EXPECT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(r.out,
            "[259]\n[256]\n[73,110,115,116,114,117,99,116,105,111,110,58,32,259,10,79,117,"
            "116,112,117,116,58,32,97]\n");

  EXPECT_EQ(run_cli("tokenize " + model + " --decode 5000").status, 2);
  EXPECT_EQ(run_cli("tokenize " + model).status, 2);
  EXPECT_EQ(run_cli("tokenize " + model + " --text a --decode 1").status, 2);
  CliRun missing = run_cli("tokenize --model " + (tmp.path / "none").string() + " --text a");
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.out.find("no such model folder"), std::string::npos);
}
