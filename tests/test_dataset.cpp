// The data pipeline: reading alpaca / chat / sharegpt records from JSON and JSONL, errors for
// malformed input, tokenization with label masks (the prompt/answer boundary, the end token,
// truncation), the fraction and train/eval split, and the per-epoch batch order.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "data/dataset.h"
#include "data/template.h"
#include "test_util.h"
#include "tokenizer/tokenizer.h"

using namespace loratune;
using namespace loratune::data;
using loratune::test::TempDir;
using loratune::tokenizer::Tokenizer;

namespace {

// The message of the Error that `f` throws ("" if it throws none).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<Record> read_text(const std::string& text, bool skip_bad = false,
                              ReadStats* stats = nullptr) {
  return read_records_from_string(text, "data.json", skip_bad, stats);
}

// Byte-level tokenizer with merges that join across the seed template's prompt/answer
// boundary: "Output: Paris" tokenized in one piece gives " P", separately " " then "P".
Tokenizer boundary_tokenizer(const TempDir& dir) {
  tokenizer::write_byte_level_tokenizer(dir.path(), {{" ", "P"}, {"a", "r"}, {"\n", "\n"}});
  return Tokenizer::load(dir.path());
}

Record alpaca(std::string instruction, std::string input, std::string output) {
  Record r;
  r.example = {std::move(instruction), std::move(input), std::move(output), ""};
  return r;
}

std::vector<int> concat(std::vector<int> a, const std::vector<int>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<Record> numbered_records(int n) {
  std::vector<Record> records;
  for (int i = 0; i < n; ++i) records.push_back(alpaca("q" + std::to_string(i), "", "a"));
  return records;
}

std::vector<std::string> instructions(const std::vector<Record>& records) {
  std::vector<std::string> out;
  for (const Record& r : records) out.push_back(r.example.instruction);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reading records

TEST(DatasetRead, AlpacaArrayWithOptionalColumns) {
  ReadStats stats;
  std::vector<Record> records = read_text(R"([
    {"instruction": "Translate", "input": "hola", "output": "hello"},
    {"instruction": "Say hi", "output": "hi", "extra": 3},
    {"instruction": "Again", "input": null, "output": "yes", "system": "Be brief.",
     "history": [["first q", "first a"], ["second q", "second a"]]}
  ])",
                                          false, &stats);
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(stats.records, 3);
  EXPECT_EQ(records[0].example.instruction, "Translate");
  EXPECT_EQ(records[0].example.input, "hola");
  EXPECT_EQ(records[0].example.output, "hello");
  EXPECT_EQ(records[0].example.system, "");
  EXPECT_TRUE(records[0].history.empty());
  EXPECT_EQ(records[1].example.input, "");
  EXPECT_EQ(records[2].example.input, "");
  EXPECT_EQ(records[2].example.system, "Be brief.");
  ASSERT_EQ(records[2].history.size(), 2u);
  EXPECT_EQ(records[2].history[1].first, "second q");
  EXPECT_EQ(records[2].history[1].second, "second a");
}

TEST(DatasetRead, ChatMessagesBecomeHistoryAndFinalTurn) {
  std::vector<Record> records = read_text(
      R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "u1"},)"
      R"( {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},)"
      R"( {"role": "assistant", "content": "a2"}]})"
      "\n"
      R"({"messages": [{"role": "user", "content": "only"}, {"role": "assistant", "content": "one"}],)"
      R"( "system": "top"})"
      "\n");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].example.system, "S");
  EXPECT_EQ(records[0].example.instruction, "u2");
  EXPECT_EQ(records[0].example.input, "");
  EXPECT_EQ(records[0].example.output, "a2");
  ASSERT_EQ(records[0].history.size(), 1u);
  EXPECT_EQ(records[0].history[0], (std::pair<std::string, std::string>{"u1", "a1"}));
  EXPECT_EQ(records[1].example.system, "top");
  EXPECT_EQ(records[1].example.instruction, "only");
  EXPECT_TRUE(records[1].history.empty());
}

TEST(DatasetRead, ShareGptConversations) {
  std::vector<Record> records = read_text(R"([{"conversations": [
      {"from": "system", "value": "sys"}, {"from": "human", "value": "h1"},
      {"from": "gpt", "value": "g1"}, {"from": "human", "value": "h2"},
      {"from": "gpt", "value": "g2"}]}])");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_EQ(records[0].example.system, "sys");
  EXPECT_EQ(records[0].example.instruction, "h2");
  EXPECT_EQ(records[0].example.output, "g2");
  ASSERT_EQ(records[0].history.size(), 1u);
  EXPECT_EQ(records[0].history[0].first, "h1");
  EXPECT_EQ(records[0].history[0].second, "g1");
}

TEST(DatasetRead, FormatIsDecidedByContentNotExtension) {
  TempDir dir;
  const std::string array = R"([{"instruction": "a", "output": "b"}, {"instruction": "c",)"
                            R"( "output": "d"}])";
  const std::string jsonl =
      "\xEF\xBB\xBF{\"instruction\": \"a\", \"output\": \"b\"}\r\n\r\n"
      "   \n{\"instruction\": \"c\", \"output\": \"d\"}";  // no final \n
  test::write_file(dir / "array.jsonl", array);
  test::write_file(dir / "lines.json", jsonl);
  std::vector<Record> a = read_records(dir / "array.jsonl", false, nullptr);
  std::vector<Record> b = read_records(dir / "lines.json", false, nullptr);
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(a[i].example.instruction, b[i].example.instruction);
    EXPECT_EQ(a[i].example.output, b[i].example.output);
  }
  // An array with a BOM and leading whitespace is still an array.
  EXPECT_EQ(read_text("\xEF\xBB\xBF\n  " + array).size(), 2u);
}

TEST(DatasetRead, MissingFileIsAnError) {
  TempDir dir;
  std::string msg = error_of([&] { read_records(dir / "nope.json", false, nullptr); });
  EXPECT_NE(msg.find("nope.json"), std::string::npos) << msg;
  msg = error_of([&] { read_records(dir.path(), false, nullptr); });
  EXPECT_NE(msg.find("cannot read data file"), std::string::npos) << msg;
}

TEST(DatasetRead, SyntaxErrorInArrayNamesFileLineAndColumnEvenWithSkipBad) {
  TempDir dir;
  test::write_file(dir / "broken.json",
                   "[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"c\" "
                   "\"output\": \"d\"}\n]\n");
  for (bool skip_bad : {false, true}) {
    std::string msg = error_of([&] { read_records(dir / "broken.json", skip_bad, nullptr); });
    EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;
    EXPECT_NE(msg.find("broken.json, line 3, column"), std::string::npos) << msg;
  }
}

TEST(DatasetRead, BrokenJsonlLineNamesTheLineOrIsSkippedAndCounted) {
  TempDir dir;
  test::write_file(dir / "d.jsonl",
                   "{\"instruction\": \"a\", \"output\": \"b\"}\n"
                   "\n"
                   "{\"instruction\": \"c\", \"output\": \n"
                   "{\"instruction\": \"e\", \"output\": \"f\"}\n");
  std::string msg = error_of([&] { read_records(dir / "d.jsonl", false, nullptr); });
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find("d.jsonl, line 3"), std::string::npos) << msg;
  EXPECT_NE(msg.find("--skip-bad-records"), std::string::npos) << msg;

  ReadStats stats;
  std::vector<Record> records = read_records(dir / "d.jsonl", true, &stats);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].example.instruction, "e");
  EXPECT_EQ(stats.records, 2);
  EXPECT_EQ(stats.skipped_bad, 1);
  EXPECT_EQ(stats.skipped_empty, 0);
  EXPECT_NE(stats.first_bad.find("line 3"), std::string::npos) << stats.first_bad;
}

TEST(DatasetRead, NumberOutOfRangeIsMalformedJson) {
  // nlohmann reports this one as out_of_range, not as a parse error.
  const std::string overflow = R"({"instruction": "a", "output": "b", "n": 1e999})";
  const std::string good = R"({"instruction": "c", "output": "d"})";
  std::string msg = error_of([&] { read_text(good + "\n" + overflow + "\n"); });
  EXPECT_NE(msg.find("invalid JSON: number overflow"), std::string::npos) << msg;
  EXPECT_NE(msg.find("data.json, line 2"), std::string::npos) << msg;
  ReadStats stats;
  EXPECT_EQ(read_text(good + "\n" + overflow + "\n", true, &stats).size(), 1u);
  EXPECT_EQ(stats.skipped_bad, 1);
  msg = error_of([&] { read_text("[" + good + ", " + overflow + "]", true); });
  EXPECT_NE(msg.find("invalid JSON: number overflow"), std::string::npos) << msg;
}

TEST(DatasetRead, PrettyPrintedObjectIsNotJsonl) {
  std::string msg =
      error_of([] { read_text("{\n  \"instruction\": \"a\",\n  \"output\": \"b\"\n}\n"); });
  EXPECT_NE(msg.find("line 1"), std::string::npos) << msg;
  EXPECT_NE(msg.find("one complete record per line"), std::string::npos) << msg;
}

TEST(DatasetRead, MalformedRecordsNameIndexAndProblem) {
  struct Case {
    std::string record;
    std::string expected;  // part of the message
  };
  const std::vector<Case> cases = {
      {R"({"instruction": "a"})", "missing field 'output'"},
      {R"({"output": "a"})", "missing field 'instruction'"},
      {R"({"instruction": 5, "output": "a"})", "field 'instruction' must be a string, not number"},
      {R"({"instruction": "a", "output": null})", "field 'output' must be a string, not null"},
      {R"({"instruction": "a", "input": ["x"], "output": "b"})",
       "field 'input' must be a string, not array"},
      {R"({"instruction": "a", "output": "b", "system": {}})",
       "field 'system' must be a string, not object"},
      {R"({"instruction": "a", "output": "b", "history": "x"})",
       "field 'history' must be an array"},
      {R"({"instruction": "a", "output": "b", "history": [["q"]]})", "history[0] must be a pair"},
      {R"({"instruction": "a", "output": "b", "history": [["q", 1]]})",
       "history[0] must be a pair"},
      {R"("just a string")", "a record must be a JSON object, not string"},
      {R"([1, 2])", "a record must be a JSON object, not array"},
      {R"({"messages": "hi"})", "field 'messages' must be an array, not string"},
      {R"({"messages": []})", "field 'messages' is empty"},
      {R"({"messages": [3]})", "messages[0]: must be an object, not number"},
      {R"({"messages": [{"content": "x"}]})", "messages[0]: missing field 'role'"},
      {R"({"messages": [{"role": "user", "content": 7}]})",
       "messages[0]: field 'content' must be a string, not number"},
      {R"({"messages": [{"role": "tool", "content": "x"}]})", "unsupported role 'tool'"},
      {R"({"messages": [{"role": "user", "content": "x"}]})", "must end with an assistant message"},
      {R"({"messages": [{"role": "assistant", "content": "x"}]})", "starts with an assistant"},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]})",
       "messages[1]: two user messages in a row"},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"},)"
       R"( {"role": "assistant", "content": "z"}]})",
       "messages[2]: two assistant messages in a row"},
      {R"({"messages": [{"role": "user", "content": "x"}, {"role": "system", "content": "s"},)"
       R"( {"role": "assistant", "content": "z"}]})",
       "messages[1]: a system message may only come first"},
      {R"({"messages": [{"role": "system", "content": "s"}]})", "has no user message"},
      {R"({"conversations": [{"from": "human", "value": "x"}, {"from": "gpt"}]})",
       "conversations[1]: missing field 'value'"},
      {R"({"conversations": [{"from": "bot", "value": "x"}]})", "unsupported role 'bot'"},
  };
  const std::string good = R"({"instruction": "fine", "output": "ok"})";
  for (const Case& c : cases) {
    SCOPED_TRACE(c.record);
    // JSON array: the index; the good record before it is index 0.
    std::string msg = error_of([&] { read_text("[" + good + ", " + c.record + "]"); });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << msg;
    EXPECT_NE(msg.find("data.json, array index 1"), std::string::npos) << msg;
    // JSONL: the line.
    msg = error_of([&] { read_text(good + "\n" + c.record + "\n" + good + "\n"); });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << msg;
    EXPECT_NE(msg.find("data.json, line 2"), std::string::npos) << msg;
    // Skipped and counted.
    ReadStats stats;
    std::vector<Record> records =
        read_text("[" + good + ", " + c.record + ", " + good + "]", true, &stats);
    EXPECT_EQ(records.size(), 2u);
    EXPECT_EQ(stats.skipped_bad, 1);
    EXPECT_NE(stats.first_bad.find(c.expected), std::string::npos) << stats.first_bad;
  }
}

TEST(DatasetRead, EmptyAnswersAreSkippedAndCounted) {
  ReadStats stats;
  std::vector<Record> records = read_text(R"([
    {"instruction": "a", "output": ""},
    {"instruction": "b", "output": "  \n\t"},
    {"instruction": "c", "output": "yes"},
    {"messages": [{"role": "user", "content": "d"}, {"role": "assistant", "content": ""}]},
    {"instruction": "", "input": "", "output": "answer without a question"}
  ])",
                                          false, &stats);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].example.instruction, "c");
  EXPECT_EQ(records[1].example.output, "answer without a question");
  EXPECT_EQ(stats.records, 2);
  EXPECT_EQ(stats.skipped_empty, 3);
  EXPECT_EQ(stats.skipped_bad, 0);
}

TEST(DatasetRead, EmptyDatasetsGiveNoUsableRecords) {
  for (const std::string& text :
       {std::string(""), std::string("  \n\n"), std::string("[]"), std::string("\xEF\xBB\xBF"),
        std::string(R"([{"instruction": "a", "output": ""}])")}) {
    std::string msg = error_of([&] { read_text(text); });
    EXPECT_NE(msg.find("no usable records"), std::string::npos) << msg;
    EXPECT_NE(msg.find("data.json"), std::string::npos) << msg;
  }
  // Everything malformed and skipped: still no usable records, with the counts.
  std::string msg = error_of([] { read_text("{bad\n{\"x\": 1}\n", true); });
  EXPECT_NE(msg.find("no usable records: 2 malformed record(s) skipped, 0 with an empty answer"),
            std::string::npos)
      << msg;
  // A JSON value that is not an array or a record.
  msg = error_of([] { read_text("42"); });
  EXPECT_NE(msg.find("a record must be a JSON object, not number"), std::string::npos) << msg;
}

TEST(DatasetRead, StatsAddUpOverFiles) {
  ReadStats stats;
  read_text(R"([{"instruction": "a", "output": "b"}, {"instruction": "c", "output": ""}])", true,
            &stats);
  read_text("{\"instruction\": \"a\", \"output\": \"b\"}\n{oops\n", true, &stats);
  EXPECT_EQ(stats.records, 2);
  EXPECT_EQ(stats.skipped_empty, 1);
  EXPECT_EQ(stats.skipped_bad, 1);
}

TEST(DatasetRead, ShippedSampleDatasetIsValidAndMixed) {
  ReadStats stats;
  std::vector<Record> records =
      read_records(test::source_dir() + "/examples/data/sample_seed.json", false, &stats);
  EXPECT_GE(records.size(), 40u);
  EXPECT_LE(records.size(), 60u);
  EXPECT_EQ(stats.skipped_bad + stats.skipped_empty, 0);
  int chinese = 0;
  for (const Record& r : records) {
    const std::string text = r.example.instruction + r.example.input + r.example.output;
    chinese += std::any_of(text.begin(), text.end(), [](char c) { return c & 0x80; });
  }
  EXPECT_GT(chinese, 5);
  EXPECT_LT(chinese, static_cast<int>(records.size()) - 5);
}

// ---------------------------------------------------------------------------------------------
// Templates with history

TEST(DatasetTemplate, HistoryGoesBeforeTheFinalTurn) {
  Example ex{"u2", "", "a2", ""};
  std::vector<std::pair<std::string, std::string>> history = {{"u1", "a1"}};
  PromptParts chat = apply_template_with_history(TemplateKind::kChatML, ex, history);
  EXPECT_EQ(chat.prompt,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nu1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
            "<|im_start|>user\nu2<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(chat.completion, "a2");
  // A system prompt that itself contains the user header does not confuse the insertion.
  ex.system = "S <|im_start|>user\n";
  chat = apply_template_with_history(TemplateKind::kChatML, ex, history);
  EXPECT_TRUE(
      chat.prompt.starts_with("<|im_start|>system\nS <|im_start|>user\n<|im_end|>\n"
                              "<|im_start|>user\nu1<|im_end|>"))
      << chat.prompt;
  PromptParts seed =
      apply_template_with_history(TemplateKind::kSeed, {"u2", "in", "a2", ""}, history);
  EXPECT_EQ(seed.prompt, "Instruction: u1\nOutput: a1\nInstruction: u2\nInput: in\nOutput: ");
  // No history: the plain template.
  PromptParts plain = apply_template(TemplateKind::kChatML, ex);
  EXPECT_EQ(apply_template_with_history(TemplateKind::kChatML, ex, {}).prompt, plain.prompt);
}

// ---------------------------------------------------------------------------------------------
// Tokenization

TEST(DatasetTokenize, PromptAndAnswerAreTokenizedSeparately) {
  TempDir dir;
  Tokenizer tok = boundary_tokenizer(dir);
  const int eos = *tok.token_id("<|endoftext|>");
  std::vector<Record> records = {alpaca("Capital of France?", "", "Paris"),
                                 alpaca("Capital", "of France", "Paris\n\nare"),
                                 alpaca("Say", "", " Paris")};
  TokenizeStats stats;
  std::vector<TokenizedExample> out = tokenize_records(records, tok, {}, &stats);
  ASSERT_EQ(out.size(), 3u);
  int64_t tokens = 0, labelled = 0, longest = 0;
  for (size_t i = 0; i < records.size(); ++i) {
    SCOPED_TRACE(i);
    PromptParts parts = apply_template(TemplateKind::kSeed, records[i].example);
    std::vector<int> prompt = tok.encode(parts.prompt);
    std::vector<int> completion = tok.encode(parts.completion);
    std::vector<int> expected = concat(prompt, completion);
    expected.push_back(eos);
    EXPECT_EQ(out[i].ids, expected);
    ASSERT_EQ(out[i].labels.size(), out[i].ids.size());
    for (size_t t = 0; t < out[i].ids.size(); ++t) {
      EXPECT_EQ(out[i].labels[t], t < prompt.size() ? kIgnoreLabel : out[i].ids[t]) << t;
    }
    EXPECT_EQ(out[i].ids.back(), eos);
    EXPECT_EQ(out[i].labels.back(), eos);
    // The test means something: tokenizing the joined text merges " P" across the boundary
    // (unless the answer brings its own leading space).
    std::vector<int> joint = tok.encode(parts.prompt + parts.completion);
    joint.push_back(eos);
    if (i < 2) {
      EXPECT_NE(joint, out[i].ids);
    }
    tokens += static_cast<int64_t>(out[i].ids.size());
    labelled += static_cast<int64_t>(out[i].ids.size() - prompt.size());
    longest = std::max(longest, static_cast<int64_t>(out[i].ids.size()));
  }
  // "Output: " + "Paris": ..., ':', ' ' | 'P', "ar", 'i', 's', EOS.
  const int space_p = *tok.token_id(tokenizer::byte_level_string(" P"));
  const int ar = *tok.token_id("ar");
  EXPECT_EQ(std::vector<int>(out[0].ids.end() - 7, out[0].ids.end()),
            (std::vector<int>{':', ' ', 'P', ar, 'i', 's', eos}));
  EXPECT_EQ(std::count(out[0].ids.begin(), out[0].ids.end(), space_p), 0);
  EXPECT_EQ(stats.truncated, 0);
  EXPECT_EQ(stats.dropped_no_answer, 0);
  EXPECT_EQ(stats.tokens, tokens);
  EXPECT_EQ(stats.labelled_tokens, labelled);
  EXPECT_EQ(stats.longest, longest);
}

TEST(DatasetTokenize, ChatMLEndsWithImEndAndMasksHistory) {
  TempDir dir;
  Tokenizer tok = boundary_tokenizer(dir);
  const int im_end = *tok.token_id("<|im_end|>");
  const int im_start = *tok.token_id("<|im_start|>");
  Record r = alpaca("u2", "", "Paris");
  r.history = {{"u1", "a1"}};
  TokenizeOptions opt;
  opt.kind = TemplateKind::kChatML;
  std::vector<TokenizedExample> out = tokenize_records({r}, tok, opt, nullptr);
  ASSERT_EQ(out.size(), 1u);
  std::vector<int> prompt =
      tok.encode(apply_template_with_history(TemplateKind::kChatML, r.example, r.history).prompt);
  std::vector<int> expected = concat(prompt, tok.encode("Paris"));
  expected.push_back(im_end);
  EXPECT_EQ(out[0].ids, expected);
  EXPECT_EQ(std::count(prompt.begin(), prompt.end(), im_start), 5);  // special tokens matched
  std::vector<int> labels(prompt.size(), kIgnoreLabel);
  labels = concat(labels, tok.encode("Paris"));
  labels.push_back(im_end);
  EXPECT_EQ(out[0].labels, labels);
}

TEST(DatasetTokenize, TrainOnPromptLabelsEveryToken) {
  TempDir dir;
  Tokenizer tok = boundary_tokenizer(dir);
  TokenizeOptions opt;
  opt.train_on_prompt = true;
  std::vector<TokenizedExample> out =
      tokenize_records({alpaca("Capital of France?", "", "Paris")}, tok, opt, nullptr);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].labels, out[0].ids);
}

TEST(DatasetTokenize, TruncationCutsTheEndAndDropsExamplesWithoutAnswer) {
  TempDir dir;
  Tokenizer tok = boundary_tokenizer(dir);
  const int eos = *tok.token_id("<|endoftext|>");
  // "Instruction: x\nOutput: " is 23 byte-level tokens; the answer "abcdef" 6 more, + EOS = 30.
  const Record r = alpaca("x", "", "abcdef");
  const size_t prompt_len =
      tok.encode(apply_template(TemplateKind::kSeed, r.example).prompt).size();
  ASSERT_EQ(prompt_len, 23u);
  const std::vector<TokenizedExample> full = tokenize_records({r}, tok, {}, nullptr);
  ASSERT_EQ(full[0].ids.size(), 30u);

  TokenizeOptions opt;
  // Long enough: untouched.
  opt.max_length = 30;
  TokenizeStats stats;
  std::vector<TokenizedExample> out = tokenize_records({r}, tok, opt, &stats);
  EXPECT_EQ(out[0].ids, full[0].ids);
  EXPECT_EQ(stats.truncated, 0);
  // One short: the EOS goes (truncation cuts the end, like HF).
  opt.max_length = 29;
  out = tokenize_records({r}, tok, opt, &stats);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].ids, std::vector<int>(full[0].ids.begin(), full[0].ids.begin() + 29));
  EXPECT_NE(out[0].ids.back(), eos);
  EXPECT_EQ(out[0].labels.size(), 29u);
  EXPECT_EQ(stats.truncated, 1);
  // Only the first answer token is left: still an example.
  opt.max_length = 24;
  out = tokenize_records({r}, tok, opt, &stats);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].labels.back(), 'a');
  EXPECT_EQ(stats.truncated, 2);
  EXPECT_EQ(stats.dropped_no_answer, 0);
  // The prompt fills max_length: dropped and counted, the other record kept.
  opt.max_length = 23;
  // The other record, "Instruction: \nOutput: y" + EOS, is 24 tokens: cut to 23, kept.
  out = tokenize_records({r, alpaca("", "", "y")}, tok, opt, &stats);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].labels.back(), 'y');
  EXPECT_EQ(stats.truncated, 4);
  EXPECT_EQ(stats.dropped_no_answer, 1);
  EXPECT_EQ(stats.longest, 30);
  // With loss on the prompt the same truncation keeps the example.
  opt.train_on_prompt = true;
  out = tokenize_records({r}, tok, opt, nullptr);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].ids.size(), 23u);
  // max_length 2: only labels[1] can count.
  opt.train_on_prompt = false;
  opt.max_length = 2;
  TokenizeStats small;
  EXPECT_TRUE(tokenize_records({r}, tok, opt, &small).empty());
  EXPECT_EQ(small.dropped_no_answer, 1);
  opt.max_length = 1;
  EXPECT_THROW(tokenize_records({r}, tok, opt, nullptr), UsageError);
}

TEST(DatasetTokenize, ResultDoesNotDependOnThreadCount) {
  TempDir dir;
  Tokenizer tok = boundary_tokenizer(dir);
  std::vector<Record> records;
  for (int i = 0; i < 300; ++i) {
    records.push_back(alpaca("Question " + std::to_string(i), i % 3 ? "" : "ctx",
                             std::string(static_cast<size_t>(i % 50), 'x') + " Paris"));
  }
  TokenizeOptions opt;
  opt.max_length = 60;
  TokenizeStats stats;
  std::vector<TokenizedExample> out = tokenize_records(records, tok, opt, &stats);
  ASSERT_EQ(out.size(), records.size());
  for (size_t i = 0; i < records.size(); ++i) {
    std::vector<TokenizedExample> one = tokenize_records({records[i]}, tok, opt, nullptr);
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(out[i].ids, one[0].ids) << i;
    EXPECT_EQ(out[i].labels, one[0].labels) << i;
  }
  EXPECT_GT(stats.truncated, 0);
}

TEST(DatasetTokenize, EndTokenComesFromTheTokenizerOrIsRefused) {
  TempDir dir;
  tokenizer::write_byte_level_tokenizer(dir.path());
  Tokenizer tok = Tokenizer::load(dir.path());
  EXPECT_EQ(end_token_id(tok, TemplateKind::kSeed), tok.eos_id());
  EXPECT_EQ(end_token_id(tok, TemplateKind::kChatML), *tok.token_id("<|im_end|>"));

  // Without tokenizer_config.json there is no eos: seed falls back to <|endoftext|>.
  nlohmann::json j = nlohmann::json::parse(test::read_file(dir / "tokenizer.json"));
  Tokenizer bare = Tokenizer::from_json(j.dump(), "tokenizer.json");
  EXPECT_EQ(bare.eos_id(), -1);
  EXPECT_EQ(end_token_id(bare, TemplateKind::kSeed), *tok.token_id("<|endoftext|>"));

  // Without <|im_end|>, chatml is refused with a clear error.
  nlohmann::json added = nlohmann::json::array();
  for (const auto& t : j["added_tokens"]) {
    if (t["content"] != "<|im_end|>") added.push_back(t);
  }
  j["added_tokens"] = added;
  Tokenizer no_im_end = Tokenizer::from_json(j.dump(), "tokenizer.json");
  TokenizeOptions opt;
  opt.kind = TemplateKind::kChatML;
  std::string msg =
      error_of([&] { tokenize_records({alpaca("a", "", "b")}, no_im_end, opt, nullptr); });
  EXPECT_NE(msg.find("no <|im_end|> token"), std::string::npos) << msg;
  EXPECT_NE(end_token_id(no_im_end, TemplateKind::kSeed), -1);
}

// ---------------------------------------------------------------------------------------------
// Split

TEST(DatasetSplit, SeedRecipeOnePercentThenEightyTwentyInOrder) {
  SplitOptions opt;
  opt.data_fraction = 0.01;
  Split split = split_records(numbered_records(1000), opt);
  EXPECT_EQ(instructions(split.train),
            (std::vector<std::string>{"q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7"}));
  EXPECT_EQ(instructions(split.eval), (std::vector<std::string>{"q8", "q9"}));

  // Everything, no eval.
  opt.data_fraction = 1.0;
  opt.eval_fraction = 0.0;
  split = split_records(numbered_records(7), opt);
  EXPECT_EQ(split.train.size(), 7u);
  EXPECT_TRUE(split.eval.empty());
  // eval = ceil: 0.2 of 46 is 9.2 -> 10 (the sample dataset: 36 / 10).
  opt.eval_fraction = 0.2;
  split = split_records(numbered_records(46), opt);
  EXPECT_EQ(split.train.size(), 36u);
  EXPECT_EQ(split.eval.size(), 10u);
  EXPECT_EQ(split.eval.front().example.instruction, "q36");
  // kept = round half to even: 2.5 -> 2, 3.5 -> 4.
  opt.data_fraction = 0.25;
  opt.eval_fraction = 0.0;
  EXPECT_EQ(split_records(numbered_records(10), opt).train.size(), 2u);
  EXPECT_EQ(split_records(numbered_records(14), opt).train.size(), 4u);
}

TEST(DatasetSplit, ShuffleIsDeterministicAndAPermutation) {
  SplitOptions opt;
  opt.shuffle = true;
  opt.eval_fraction = 0.25;
  Split a = split_records(numbered_records(100), opt);
  Split b = split_records(numbered_records(100), opt);
  EXPECT_EQ(instructions(a.train), instructions(b.train));
  EXPECT_EQ(instructions(a.eval), instructions(b.eval));
  EXPECT_EQ(a.train.size(), 75u);
  EXPECT_EQ(a.eval.size(), 25u);
  std::vector<std::string> all = instructions(a.train);
  for (const std::string& s : instructions(a.eval)) all.push_back(s);
  std::vector<std::string> sorted = all;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::string> expected = instructions(numbered_records(100));
  std::sort(expected.begin(), expected.end());
  EXPECT_EQ(sorted, expected);
  EXPECT_NE(all, instructions(numbered_records(100)));
  opt.seed = 43;
  EXPECT_NE(instructions(split_records(numbered_records(100), opt).train), instructions(a.train));
  // The fraction is taken after the shuffle.
  opt.seed = 42;
  opt.data_fraction = 0.1;
  opt.eval_fraction = 0.0;
  Split part = split_records(numbered_records(100), opt);
  EXPECT_EQ(instructions(part.train), std::vector<std::string>(all.begin(), all.begin() + 10));
}

TEST(DatasetSplit, BadFractionsAreUsageErrors) {
  auto split_with = [](double data_fraction, double eval_fraction, int n) {
    SplitOptions opt;
    opt.data_fraction = data_fraction;
    opt.eval_fraction = eval_fraction;
    return split_records(numbered_records(n), opt);
  };
  EXPECT_THROW(split_with(0.0, 0.2, 10), UsageError);
  EXPECT_THROW(split_with(1.5, 0.2, 10), UsageError);
  EXPECT_THROW(split_with(-0.1, 0.2, 10), UsageError);
  EXPECT_THROW(split_with(std::nan(""), 0.2, 10), UsageError);
  EXPECT_THROW(split_with(1.0, 1.0, 10), UsageError);
  EXPECT_THROW(split_with(1.0, -0.2, 10), UsageError);
  // 1% of 40 rounds to 0: nothing kept.
  std::string msg = error_of([&] { split_with(0.01, 0.2, 40); });
  EXPECT_NE(msg.find("keeps none of 40 records"), std::string::npos) << msg;
  // One record kept, and eval takes it.
  msg = error_of([&] { split_with(0.01, 0.2, 100); });
  EXPECT_NE(msg.find("no training records left"), std::string::npos) << msg;
  EXPECT_NO_THROW(split_with(0.01, 0.0, 100));
}

// ---------------------------------------------------------------------------------------------
// Batches

TEST(DatasetBatches, EveryExampleOncePerEpochLastPartialKept) {
  for (bool shuffle : {false, true}) {
    std::vector<std::vector<int>> batches = make_batches(10, 4, shuffle, 42, 0);
    ASSERT_EQ(batches.size(), 3u);
    EXPECT_EQ(batches[0].size(), 4u);
    EXPECT_EQ(batches[1].size(), 4u);
    EXPECT_EQ(batches[2].size(), 2u);
    std::vector<int> all;
    for (const auto& b : batches) all.insert(all.end(), b.begin(), b.end());
    std::vector<int> sorted = all;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int> expected(10);
    for (int i = 0; i < 10; ++i) expected[i] = i;
    EXPECT_EQ(sorted, expected);
    if (!shuffle) {
      EXPECT_EQ(all, expected);  // sequential order
    }
  }
  EXPECT_TRUE(make_batches(0, 4, true, 42, 0).empty());
  EXPECT_EQ(make_batches(3, 8, true, 1, 0).size(), 1u);
  EXPECT_THROW(make_batches(3, 0, true, 1, 0), UsageError);
}

TEST(DatasetBatches, OrderIsAFunctionOfSeedAndEpoch) {
  auto flat = [](uint64_t seed, int epoch) {
    std::vector<int> all;
    for (const auto& b : make_batches(50, 4, true, seed, epoch))
      all.insert(all.end(), b.begin(), b.end());
    return all;
  };
  EXPECT_EQ(flat(42, 0), flat(42, 0));
  EXPECT_EQ(flat(42, 3), flat(42, 3));
  EXPECT_NE(flat(42, 0), flat(42, 1));
  EXPECT_NE(flat(42, 0), flat(43, 0));
  // Pinned: the order must not change between versions or machines (a resumed run relies on it).
  std::vector<std::vector<int>> pinned = make_batches(10, 4, true, 42, 0);
  EXPECT_EQ(pinned, (std::vector<std::vector<int>>{{7, 9, 2, 1}, {5, 4, 6, 8}, {3, 0}}));
}

TEST(DatasetBatches, PermutationsAreUniform) {
  // Over 4000 epochs of 4 examples each example leads about 1000 times.
  std::vector<int> first(4, 0);
  for (int epoch = 0; epoch < 4000; ++epoch) ++first[make_batches(4, 4, true, 7, epoch)[0][0]];
  for (int count : first) {
    EXPECT_GT(count, 880);
    EXPECT_LT(count, 1120);
  }
}

// ---------------------------------------------------------------------------------------------
// The real Qwen2 tokenizer and alpaca data (from ../shared; skipped without it)

TEST(DatasetQwen2, AlpacaZhSeedRecipeEndToEnd) {
  const std::string tok_dir = test::shared_dir() + "/tokenizer/qwen2";
  const std::string data = test::shared_dir() + "/data/alpaca_zh_demo.json";
  if (!std::filesystem::exists(tok_dir + "/tokenizer.json") || !std::filesystem::exists(data)) {
    GTEST_SKIP() << "needs ../shared (Qwen2 tokenizer and alpaca_zh_demo.json)";
  }
  Tokenizer tok = Tokenizer::load(tok_dir);
  ReadStats rstats;
  std::vector<Record> records = read_records(data, false, &rstats);
  EXPECT_EQ(rstats.records + rstats.skipped_empty, 1000);
  EXPECT_EQ(rstats.skipped_bad, 0);

  SplitOptions sopt;
  sopt.data_fraction = 0.01;
  Split split = split_records(records, sopt);
  EXPECT_EQ(split.train.size(), 8u);
  EXPECT_EQ(split.eval.size(), 2u);
  EXPECT_EQ(split.train[0].example.instruction, records[0].example.instruction);

  // The whole file through both templates: the boundary property on every example.
  for (TemplateKind kind : {TemplateKind::kSeed, TemplateKind::kChatML}) {
    TokenizeOptions opt;
    opt.kind = kind;
    opt.max_length = 4096;
    TokenizeStats stats;
    std::vector<TokenizedExample> out = tokenize_records(records, tok, opt, &stats);
    ASSERT_EQ(out.size(), records.size());
    EXPECT_EQ(stats.truncated, 0);
    const int end = end_token_id(tok, kind);
    EXPECT_EQ(end, kind == TemplateKind::kChatML ? 151645 : tok.eos_id());
    for (size_t i = 0; i < out.size(); ++i) {
      PromptParts parts = apply_template(kind, records[i].example);
      std::vector<int> prompt = tok.encode(parts.prompt);
      std::vector<int> expected = concat(prompt, tok.encode(parts.completion));
      expected.push_back(end);
      ASSERT_EQ(out[i].ids, expected) << i;
      ASSERT_EQ(std::count(out[i].labels.begin(), out[i].labels.end(), kIgnoreLabel),
                static_cast<std::ptrdiff_t>(prompt.size()))
          << i;
      ASSERT_EQ(out[i].labels.back(), end);
    }
    // The seed prompt of the first record, tokenized as generation will.
    if (kind == TemplateKind::kSeed) {
      std::vector<int> gen = tok.encode(generation_prompt(kind, records[0].example.instruction));
      if (records[0].example.input.empty()) {
        EXPECT_EQ(std::vector<int>(out[0].ids.begin(), out[0].ids.begin() + gen.size()), gen);
      }
    }
  }
  // Max length 512 (the recipe's) truncates some of the long answers.
  TokenizeOptions opt;
  TokenizeStats stats;
  std::vector<TokenizedExample> out = tokenize_records(records, tok, opt, &stats);
  EXPECT_EQ(static_cast<int64_t>(out.size()) + stats.dropped_no_answer,
            static_cast<int64_t>(records.size()));
  for (const TokenizedExample& e : out) EXPECT_LE(e.ids.size(), 512u);
  EXPECT_GT(stats.longest, 0);
}
