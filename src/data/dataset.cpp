// Reading dataset files: JSON arrays and JSONL of alpaca, chat and sharegpt records.
#include "data/dataset.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/json_file.h"

namespace loratune::data {

namespace {

// What is wrong with one record; turned into an Error (or a skip) by the reader, which knows
// where the record is.
struct BadRecord {
  std::string what;
};

constexpr const char* kRecordKinds =
    "a record is {instruction, input, output}, {messages: [{role, content}...]} or "
    "{conversations: [{from, value}...]}";

std::string single_quoted(std::string_view s) {
  return "'" + std::string(s) + "'";
}

bool is_blank(std::string_view s) {
  for (char c : s) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\f' && c != '\v') return false;
  }
  return true;
}

// obj[key] as a string. A missing (or null, when optional) key gives "".
std::string string_field(const Json& obj, const char* key, bool required,
                         const std::string& context = "") {
  auto it = obj.find(key);
  if (it == obj.end() || (!required && it->is_null())) {
    if (required) throw BadRecord{context + "missing field " + single_quoted(key)};
    return {};
  }
  if (!it->is_string()) {
    throw BadRecord{context + "field " + single_quoted(key) + " must be a string, not " +
                    it->type_name()};
  }
  return it->get<std::string>();
}

// alpaca "history": [[user, assistant], ...].
std::vector<std::pair<std::string, std::string>> parse_history(const Json& obj) {
  std::vector<std::pair<std::string, std::string>> history;
  auto it = obj.find("history");
  if (it == obj.end() || it->is_null()) return history;
  if (!it->is_array()) {
    throw BadRecord{std::string("field 'history' must be an array of [user, assistant] pairs, "
                                "not ") +
                    it->type_name()};
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& turn = (*it)[i];
    if (!turn.is_array() || turn.size() != 2 || !turn[0].is_string() || !turn[1].is_string()) {
      throw BadRecord{"history[" + std::to_string(i) +
                      "] must be a pair of strings [user, assistant]"};
    }
    history.emplace_back(turn[0].get<std::string>(), turn[1].get<std::string>());
  }
  return history;
}

Record parse_alpaca(const Json& obj) {
  Record r;
  r.example.instruction = string_field(obj, "instruction", true);
  r.example.input = string_field(obj, "input", false);
  r.example.output = string_field(obj, "output", true);
  r.example.system = string_field(obj, "system", false);
  r.history = parse_history(obj);
  return r;
}

// The field names of one conversation format.
struct ChatFormat {
  const char* list;     // "messages" / "conversations"
  const char* role;     // "role" / "from"
  const char* content;  // "content" / "value"
};
constexpr ChatFormat kMessages = {"messages", "role", "content"};
constexpr ChatFormat kShareGpt = {"conversations", "from", "value"};

enum class Role { kSystem, kUser, kAssistant };

Role parse_role(const std::string& role, const std::string& context) {
  if (role == "system") return Role::kSystem;
  if (role == "user" || role == "human") return Role::kUser;
  if (role == "assistant" || role == "gpt") return Role::kAssistant;
  throw BadRecord{context + "unsupported role " + single_quoted(role) +
                  " (supported: system, user or human, assistant or gpt)"};
}

Record parse_chat(const Json& obj, const ChatFormat& f) {
  const Json& list = obj[f.list];
  if (!list.is_array()) {
    throw BadRecord{"field " + single_quoted(f.list) + " must be an array, not " +
                    list.type_name()};
  }
  if (list.empty()) throw BadRecord{"field " + single_quoted(f.list) + " is empty"};
  Record r;
  r.example.system = string_field(obj, "system", false);
  std::vector<std::pair<std::string, std::string>> turns;  // (user, assistant)
  bool want_user = true;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string context = std::string(f.list) + "[" + std::to_string(i) + "]: ";
    const Json& m = list[i];
    if (!m.is_object()) throw BadRecord{context + "must be an object, not " + m.type_name()};
    Role role = parse_role(string_field(m, f.role, true, context), context);
    std::string content = string_field(m, f.content, true, context);
    if (role == Role::kSystem) {
      if (i != 0) throw BadRecord{context + "a system message may only come first"};
      r.example.system = std::move(content);
    } else if (role == Role::kUser) {
      if (!want_user) throw BadRecord{context + "two user messages in a row"};
      turns.emplace_back(std::move(content), std::string());
      want_user = false;
    } else {
      if (want_user) {
        throw BadRecord{context + (turns.empty() ? "the conversation starts with an assistant "
                                                   "message instead of a user message"
                                                 : "two assistant messages in a row")};
      }
      turns.back().second = std::move(content);
      want_user = true;
    }
  }
  if (turns.empty()) throw BadRecord{"the conversation has no user message"};
  if (!want_user) throw BadRecord{"the conversation must end with an assistant message"};
  r.example.instruction = std::move(turns.back().first);
  r.example.output = std::move(turns.back().second);
  turns.pop_back();
  r.history = std::move(turns);
  return r;
}

Record parse_record(const Json& v) {
  if (!v.is_object())
    throw BadRecord{std::string("a record must be a JSON object, not ") + v.type_name()};
  if (v.contains(kMessages.list)) return parse_chat(v, kMessages);
  if (v.contains(kShareGpt.list)) return parse_chat(v, kShareGpt);
  return parse_alpaca(v);
}

// nlohmann's message without its "[json.exception...] parse error at line L, column C: "
// prefix (we say where ourselves).
std::string parse_error_text(const Json::parse_error& e) {
  std::string msg = e.what();
  size_t at = msg.find("parse error");
  if (at != std::string::npos) {
    size_t colon = msg.find(": ", at);
    if (colon != std::string::npos) return msg.substr(colon + 2);
  }
  return msg;
}

// Any other nlohmann error without its "[json.exception.NAME.N] " prefix.
std::string json_error_text(const Json::exception& e) {
  std::string msg = e.what();
  if (msg.starts_with("[json.exception.")) {
    size_t end = msg.find("] ");
    if (end != std::string::npos) return msg.substr(end + 2);
  }
  return msg;
}

// 1-based line and column of byte `offset` (0-based) in `text`.
std::string line_and_column(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  size_t line = 1, line_start = 0;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      line_start = i + 1;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(offset - line_start + 1);
}

class Reader {
 public:
  Reader(const std::string& name, bool skip_bad, ReadStats* stats)
      : name_(name), skip_bad_(skip_bad), stats_(stats ? stats : &own_stats_) {}

  // One record at `where` ("line 3", "array index 7").
  void add(const Json& v, const std::string& where) {
    Record r;
    try {
      r = parse_record(v);
    } catch (const BadRecord& bad) {
      this->bad(bad.what, where);
      return;
    }
    if (is_blank(r.example.output)) {
      ++stats_->skipped_empty;
      ++empty_;
      return;
    }
    records_.push_back(std::move(r));
  }

  void bad(const std::string& what, const std::string& where) {
    if (!skip_bad_) throw Error(what, name_ + ", " + where, fix_hint());
    ++stats_->skipped_bad;
    ++bad_;
    if (stats_->first_bad.empty()) stats_->first_bad = what + " (" + name_ + ", " + where + ")";
  }

  std::vector<Record> finish() {
    if (records_.empty()) {
      std::string counts;
      if (bad_ == 0 && empty_ == 0) {
        counts = "the file holds no records";
      } else {
        counts = std::to_string(bad_) + " malformed record(s) skipped, " + std::to_string(empty_) +
                 " with an empty answer";
      }
      throw Error("no usable records: " + counts, name_, std::string(kRecordKinds));
    }
    stats_->records += static_cast<int64_t>(records_.size());
    return std::move(records_);
  }

  std::string fix_hint() const {
    return std::string(kRecordKinds) +
           "; fix the record, or skip malformed records with "
           "--skip-bad-records";
  }

 private:
  std::string name_;
  bool skip_bad_;
  ReadStats own_stats_;
  ReadStats* stats_;
  std::vector<Record> records_;
  int64_t bad_ = 0, empty_ = 0;
};

void read_array(std::string_view text, Reader& reader, const std::string& name) {
  Json doc;
  const char* hint =
      "a JSON dataset must be one array of records; a syntax error cannot be skipped with "
      "--skip-bad-records (JSONL can: one record per line)";
  try {
    doc = Json::parse(text);
  } catch (const Json::parse_error& e) {
    // e.byte is the 1-based position of the last byte read.
    size_t offset = e.byte > 0 ? static_cast<size_t>(e.byte - 1) : 0;
    throw Error("invalid JSON: " + parse_error_text(e), name + ", " + line_and_column(text, offset),
                hint);
  } catch (const Json::exception& e) {
    // Not a syntax error: a number out of range ("1e999").
    throw Error("invalid JSON: " + json_error_text(e), name, hint);
  }
  if (!doc.is_array()) {
    throw Error(std::string("a JSON dataset must be an array of records, not ") + doc.type_name(),
                name);
  }
  for (size_t i = 0; i < doc.size(); ++i) reader.add(doc[i], "array index " + std::to_string(i));
}

void read_jsonl(std::string_view text, Reader& reader) {
  size_t pos = 0;
  int64_t line_no = 0;
  bool first_record = true;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_no;
    if (is_blank(line)) continue;
    const std::string where = "line " + std::to_string(line_no);
    Json v;
    try {
      v = Json::parse(line);
    } catch (const Json::parse_error& e) {
      std::string what = "invalid JSON: " + parse_error_text(e);
      if (first_record && what.find("end of input") != std::string::npos) {
        what += " (JSONL needs one complete record per line; a JSON file must be an array)";
      }
      first_record = false;
      reader.bad(what, where);
      continue;
    } catch (const Json::exception& e) {
      first_record = false;
      reader.bad("invalid JSON: " + json_error_text(e), where);
      continue;
    }
    first_record = false;
    reader.add(v, where);
  }
}

}  // namespace

std::vector<Record> read_records_from_string(std::string_view text, const std::string& name,
                                             bool skip_bad, ReadStats* stats) {
  if (text.starts_with("\xEF\xBB\xBF")) text.remove_prefix(3);  // UTF-8 byte order mark
  Reader reader(name, skip_bad, stats);
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string_view::npos && text[first] == '[') {
    read_array(text, reader, name);
  } else {
    read_jsonl(text, reader);
  }
  return reader.finish();
}

std::vector<Record> read_records(const std::string& path, bool skip_bad, ReadStats* stats) {
  if (!file_exists(path)) throw Error("cannot read data file", path, "does it exist?");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open data file", path, "is it readable?");
  std::stringstream ss;
  ss << in.rdbuf();
  return read_records_from_string(ss.str(), path, skip_bad, stats);
}

}  // namespace loratune::data
