// loratune tokenize: encode text to ids (and back) with a model's tokenizer.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/error.h"
#include "data/template.h"
#include "tokenizer/tokenizer.h"

namespace loratune::cli {

namespace {

const CommandSpec kSpec = {
    "tokenize",
    "--model DIR (--text T | --file F [--jsonl] | --decode IDS) [options]",
    "Encodes text with the model's tokenizer and prints one JSON line per text:\n"
    "{\"ids\": [...], \"tokens\": [...]}, or only the id list with --ids-only. --decode prints\n"
    "the text of a comma-separated id list.",
    {
        {"--model", "DIR", "model folder with tokenizer.json (or vocab.json + merges.txt)"},
        {"--text", "T", "text to encode (may repeat)", "", true},
        {"--file", "F", "encode each line of F ('-': standard input)"},
        {"--jsonl", "",
         "each line of --file is JSON: a string, {\"text\": ...}, or an "
         "{instruction, input, output} record (formatted by --template)"},
        {"--template", "NAME",
         "prompt template for instruction records: seed, alpaca, chatml or llama3", "seed"},
        {"--ids-only", "", "print only the id list of each text"},
        {"--split-special", "", "treat special-token text such as <|im_start|> as plain text"},
        {"--add-special-tokens", "",
         "add the post-processor's special tokens (Llama's BOS), as Hugging Face's default"},
        {"--decode", "IDS", "decode a comma-separated id list instead of encoding"},
        {"--skip-special-tokens", "", "leave special tokens out of --decode's text"},
    }};

std::string read_input(const std::string& path) {
  std::ostringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw UsageError("cannot open file", path);
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> split_lines(const std::string& data) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < data.size()) {
    size_t nl = data.find('\n', pos);
    if (nl == std::string::npos) nl = data.size();
    lines.push_back(data.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return lines;
}

std::string text_of_record(const nlohmann::json& v, data::TemplateKind kind,
                           const std::string& where) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object()) {
    auto text = v.find("text");
    if (text != v.end() && text->is_string()) return text->get<std::string>();
    auto field = [&](const char* key) {
      auto it = v.find(key);
      return it != v.end() && it->is_string() ? it->get<std::string>() : std::string();
    };
    auto instruction = v.find("instruction");
    if (instruction != v.end() && instruction->is_string()) {
      data::PromptParts parts =
          data::apply_template(kind, {field("instruction"), field("input"), field("output"), ""});
      return parts.prompt + parts.completion;
    }
  }
  throw UsageError("a line must be a JSON string, {\"text\": ...} or an instruction record", where);
}

void print_encoding(const tokenizer::Tokenizer& tok, const std::vector<int32_t>& ids, bool ids_only,
                    std::string& out) {
  nlohmann::json id_list = ids;
  if (ids_only) {
    out += id_list.dump();
  } else {
    nlohmann::json tokens = nlohmann::json::array();
    for (int32_t id : ids) tokens.push_back(std::string(tok.token_string(id)));
    nlohmann::json rec = {{"ids", std::move(id_list)}, {"tokens", std::move(tokens)}};
    out += rec.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }
  out += '\n';
}

}  // namespace

int run_tokenize(const Args& args) {
  ParsedArgs a = parse_args(kSpec, args);
  const int sources =
      (a.has("--text") ? 1 : 0) + (a.has("--file") ? 1 : 0) + (a.has("--decode") ? 1 : 0);
  if (sources != 1)
    throw UsageError("give exactly one of --text, --file and --decode", "loratune tokenize",
                     "see --help");
  if (a.has("--jsonl") && !a.has("--file")) throw UsageError("--jsonl needs --file");
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(a.required("--model"));

  if (a.has("--decode")) {
    std::vector<int32_t> ids;
    for (long long id : parse_int_list(a.str("--decode"), "--decode")) {
      if (id < 0 || id >= tok.vocab_size() || !tok.is_valid(static_cast<int32_t>(id)))
        throw UsageError("id " + std::to_string(id) + " is not a token of this tokenizer",
                         "--decode", "ids lie in 0.." + std::to_string(tok.vocab_size() - 1));
      ids.push_back(static_cast<int32_t>(id));
    }
    std::string text = tok.decode(ids, a.flag("--skip-special-tokens"));
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }

  std::vector<std::string> texts;
  if (a.has("--text")) {
    texts = a.all("--text");
  } else {
    const std::string path = a.str("--file");
    std::vector<std::string> lines = split_lines(read_input(path));
    if (!a.has("--jsonl")) {
      texts = std::move(lines);
    } else {
      data::TemplateKind kind = data::parse_template_kind(a.str("--template", "seed"));
      for (size_t i = 0; i < lines.size(); ++i) {
        if (lines[i].find_first_not_of(" \t\r") == std::string::npos) continue;
        std::string where = path + ":" + std::to_string(i + 1);
        nlohmann::json v;
        try {
          v = nlohmann::json::parse(lines[i]);
        } catch (const nlohmann::json::exception& e) {
          throw UsageError(std::string("not valid JSON: ") + e.what(), where);
        }
        texts.push_back(text_of_record(v, kind, where));
      }
    }
  }
  tokenizer::EncodeOptions options;
  options.split_special = a.flag("--split-special");
  options.add_special_tokens = a.flag("--add-special-tokens");
  const bool ids_only = a.flag("--ids-only");
  std::string out;
  std::vector<int32_t> ids;
  for (const std::string& text : texts) {
    ids.clear();
    tok.encode_into(text, ids, options);
    print_encoding(tok, ids, ids_only, out);
    if (out.size() > (1 << 20)) {
      std::fwrite(out.data(), 1, out.size(), stdout);
      out.clear();
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace loratune::cli
