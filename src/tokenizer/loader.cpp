// Loading a tokenizer: tokenizer.json, or vocab.json + merges.txt (+ added_tokens.json), with
// special tokens from tokenizer_config.json and config.json. The slow-file layout is first
// turned into the tokenizer.json structure, so both go through one builder.
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "io/gguf.h"
#include "tokenizer/components.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_data.h"
#include "tokenizer/unicode.h"

namespace loratune::tokenizer {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The byte of a ByteFallback token "<0xAB>", or -1.
int byte_token_value(const std::string& s) {
  if (s.size() != 6 || s.compare(0, 3, "<0x") != 0 || s[5] != '>') return -1;
  int value = 0;
  for (char c : s.substr(3, 2)) {
    const int digit = c >= '0' && c <= '9'   ? c - '0'
                      : c >= 'A' && c <= 'F' ? c - 'A' + 10
                      : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                             : -1;
    if (digit < 0) return -1;
    value = value * 16 + digit;
  }
  return value;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("cannot open file", path.string(), "check that the model folder is complete");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error("cannot read file", path.string());
  return ss.str();
}

json parse_json(std::string_view text, const std::string& where) {
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw Error(std::string("not valid JSON: ") + e.what(), where);
  }
}

void parse_added_token(const json& t, AddedToken& a, const std::string& where) {
  if (!t.is_object()) throw Error("an added token must be an object", where);
  const json* content = member(t, "content");
  if (!content || !content->is_string() || content->get<std::string>().empty())
    throw Error("an added token needs a non-empty \"content\"", where);
  a.content = content->get<std::string>();
  a.special = get_bool(t, "special", a.special, where);
  a.single_word = get_bool(t, "single_word", false, where);
  a.lstrip = get_bool(t, "lstrip", false, where);
  a.rstrip = get_bool(t, "rstrip", false, where);
  a.normalized = get_bool(t, "normalized", !a.special, where);
}

// "<|endoftext|>" or {"content": "<|endoftext|>", ...} or null.
std::string special_token_text(const json& config, const char* key, const std::string& where) {
  const json* v = member(config, key);
  if (!v) return "";
  if (v->is_string()) return v->get<std::string>();
  if (v->is_object()) return get_string(*v, "content", where + ": " + key);
  throw Error(std::string("'") + key + "' must be a string or an object with \"content\"", where);
}

std::vector<int64_t> config_ids(const json& config, const char* key, const std::string& where) {
  std::vector<int64_t> ids;
  const json* v = member(config, key);
  if (!v) return ids;
  if (v->is_array()) {
    for (const json& x : *v) ids.push_back(get_id(x, where + ": " + key));
  } else {
    ids.push_back(get_id(*v, where + ": " + key));
  }
  return ids;
}

std::atomic<uint64_t> next_uid{1};

}  // namespace

// Turns a parsed tokenizer.json (plus optional configs) into a Tokenizer.
class TokenizerBuilder {
 public:
  static Tokenizer build(const json& root, const std::string& where, const json& tokenizer_config,
                         const std::string& tc_where, const json& model_config,
                         const std::string& mc_where);
};

Tokenizer TokenizerBuilder::build(const json& root, const std::string& where,
                                  const json& tokenizer_config, const std::string& tc_where,
                                  const json& model_config, const std::string& mc_where) {
  auto d = std::make_shared<TokenizerData>();
  d->uid = next_uid.fetch_add(1);
  if (!root.is_object()) throw Error("a tokenizer.json must hold a JSON object", where);

  // Model: vocabulary and merges.
  const json* model = member(root, "model");
  if (!model || !model->is_object()) throw Error("missing \"model\"", where);
  const std::string mwhere = where + ": model";
  if (std::string type = get_string(*model, "type", mwhere); !type.empty() && type != "BPE")
    throw Error("unsupported model type '" + type + "'", mwhere, "loratune implements BPE");
  if (const json* dropout = member(*model, "dropout");
      dropout && !(dropout->is_number() && dropout->get<double>() == 0.0))
    throw Error("BPE dropout is not supported", mwhere);
  if (!get_string(*model, "continuing_subword_prefix", mwhere).empty() ||
      !get_string(*model, "end_of_word_suffix", mwhere).empty())
    throw Error("continuing_subword_prefix / end_of_word_suffix are not supported", mwhere,
                "loratune implements the BPE of Qwen2, Llama and Mistral");
  parse_text_pipeline(root, where, *d);
  const bool sentencepiece = d->alphabet == Alphabet::kSentencePiece;
  const bool byte_fallback = get_bool(*model, "byte_fallback", false, mwhere);
  if (byte_fallback && !sentencepiece)
    throw Error("byte_fallback with a ByteLevel decoder is not supported", mwhere,
                "byte fallback belongs to SentencePiece-style vocabularies (\"▁\" for spaces)");
  d->ignore_merges = get_bool(*model, "ignore_merges", false, mwhere);
  if (d->ignore_merges && sentencepiece)
    throw Error("ignore_merges is supported for byte-level BPE only", mwhere);

  const json* vocab = member(*model, "vocab");
  if (!vocab || !vocab->is_object())
    throw Error("\"vocab\" must be an object of token -> id", mwhere);
  int64_t max_id = -1;
  for (auto it = vocab->begin(); it != vocab->end(); ++it)
    max_id = std::max(max_id, get_id(it.value(), mwhere + ".vocab[\"" + it.key() + "\"]"));

  std::vector<AddedToken> added;
  if (const json* list = member(root, "added_tokens")) {
    if (!list->is_array()) throw Error("\"added_tokens\" must be a list", where);
    for (size_t i = 0; i < list->size(); ++i) {
      std::string w = where + ": added_tokens[" + std::to_string(i) + "]";
      AddedToken a;
      parse_added_token((*list)[i], a, w);
      const json* id = member((*list)[i], "id");
      if (!id) throw Error("an added token needs an \"id\"", w);
      a.id = static_cast<int32_t>(get_id(*id, w));
      max_id = std::max<int64_t>(max_id, a.id);
      added.push_back(std::move(a));
    }
  }
  // Entries of tokenizer_config.json's added_tokens_decoder that tokenizer.json lacks.
  if (const json* dec = member(tokenizer_config, "added_tokens_decoder")) {
    if (!dec->is_object()) throw Error("\"added_tokens_decoder\" must be an object", tc_where);
    for (auto it = dec->begin(); it != dec->end(); ++it) {
      std::string w = tc_where + ": added_tokens_decoder[\"" + it.key() + "\"]";
      int64_t id = -1;
      try {
        size_t used = 0;
        id = std::stoll(it.key(), &used);
        if (used != it.key().size()) id = -1;
      } catch (const std::exception&) {
        id = -1;
      }
      if (id < 0 || id > kMaxTokenId) throw Error("the key must be a token id", w);
      bool known = false;
      for (const AddedToken& a : added) known = known || a.id == id;
      if (known) continue;
      AddedToken a;
      a.special = true;
      parse_added_token(it.value(), a, w);
      a.id = static_cast<int32_t>(id);
      max_id = std::max(max_id, id);
      added.push_back(std::move(a));
    }
  }
  size_t vocab_entries = vocab->size() + added.size();
  if (max_id >= static_cast<int64_t>(2 * vocab_entries + 1024))
    throw Error("token ids are too sparse: largest id " + std::to_string(max_id) + " for " +
                    std::to_string(vocab_entries) + " tokens",
                where, "ids must be (nearly) consecutive from 0");

  const size_t n = static_cast<size_t>(max_id + 1);
  d->token_strings.assign(n, "");
  d->token_bytes.assign(n, "");
  d->flags.assign(n, 0);
  for (auto it = vocab->begin(); it != vocab->end(); ++it) {
    auto id = static_cast<size_t>(it.value().get<int64_t>());
    if (d->flags[id])
      throw Error("token id " + std::to_string(id) + " is used twice", mwhere + ".vocab",
                  "each id must name one token");
    d->flags[id] = TokenizerData::kValid;
    d->token_strings[id] = it.key();
    d->token_ids.insert(it.key(), static_cast<int32_t>(id));
  }

  // Bytes of each token. Byte-level: its characters mapped back to bytes, or its own UTF-8
  // when it has any other character (as the ByteLevel decoder does). SentencePiece: its UTF-8
  // with the space symbol as a space, and "<0xAB>" as that byte under ByteFallback.
  int16_t byte_of[324];
  std::fill(std::begin(byte_of), std::end(byte_of), int16_t{-1});
  for (int b = 0; b < 256; ++b) byte_of[byte_level_char(static_cast<unsigned char>(b))] = b;
  auto byte_level_bytes = [&](const std::string& s) {
    std::string out;
    size_t i = 0;
    while (i < s.size()) {
      char32_t cp = next_code_point(s, i);
      if (cp >= 324 || byte_of[cp] < 0) return s;
      out.push_back(static_cast<char>(byte_of[cp]));
    }
    return out;
  };
  auto sentencepiece_bytes = [&](const std::string& s) {
    if (d->decoder.byte_tokens) {
      if (int b = byte_token_value(s); b >= 0) return std::string(1, static_cast<char>(b));
    }
    std::string out;
    const std::string& space = d->decoder.space_symbol;
    for (size_t i = 0; i < s.size();) {
      if (s.compare(i, space.size(), space) == 0) {
        out.push_back(' ');
        i += space.size();
      } else {
        out.push_back(s[i++]);
      }
    }
    return out;
  };
  auto bytes_of = [&](const std::string& s) {
    return sentencepiece ? sentencepiece_bytes(s) : byte_level_bytes(s);
  };
  for (size_t id = 0; id < n; ++id)
    if (d->flags[id]) d->token_bytes[id] = bytes_of(d->token_strings[id]);

  int32_t unk = -1;
  if (std::string u = get_string(*model, "unk_token", mwhere); !u.empty()) {
    unk = d->token_ids.find(u);
    if (unk < 0) throw Error("unk_token '" + u + "' is not in the vocabulary", mwhere);
  }
  d->unk = unk;
  const bool fuse_unk = get_bool(*model, "fuse_unk", false, mwhere);
  if (sentencepiece) {
    // Symbols are characters; the byte tokens serve the fallback. Words of one byte are ASCII
    // characters, looked up in byte_ids.
    std::unordered_map<char32_t, int32_t> chars;
    for (size_t id = 0; id < n; ++id) {
      const std::string& s = d->token_strings[id];
      size_t i = 0;
      if (!d->flags[id] || s.empty()) continue;
      const char32_t cp = next_code_point(s, i);
      if (i == s.size()) chars.emplace(cp, static_cast<int32_t>(id));
    }
    int32_t fallback_ids[256];
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      fallback_ids[b] = d->token_ids.find(name);
    }
    for (int b = 0; b < 256; ++b) {
      auto it = chars.find(static_cast<char32_t>(b));
      d->byte_ids[b] = b >= 128            ? -1
                       : it != chars.end() ? it->second
                       : byte_fallback     ? fallback_ids[b]
                                           : -1;
    }
    d->bpe.set_char_tokens(std::move(chars), fallback_ids, byte_fallback, unk, fuse_unk);
  } else {
    for (int b = 0; b < 256; ++b) {
      std::string s;
      append_utf8(s, byte_level_char(static_cast<unsigned char>(b)));
      d->byte_ids[b] = d->token_ids.find(s);
    }
    d->bpe.set_byte_tokens(d->byte_ids, unk, fuse_unk);
  }

  const json* merges = member(*model, "merges");
  if (merges && !merges->is_array()) throw Error("\"merges\" must be a list", mwhere);
  if (merges) {
    std::string joined;
    for (size_t rank = 0; rank < merges->size(); ++rank) {
      const json& m = (*merges)[rank];
      std::string left, right;
      if (m.is_string()) {
        const std::string& s = m.get_ref<const std::string&>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          throw Error("merge \"" + s + "\" must be two tokens separated by one space",
                      mwhere + ".merges[" + std::to_string(rank) + "]");
        left = s.substr(0, sp);
        right = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        left = m[0].get<std::string>();
        right = m[1].get<std::string>();
      } else {
        throw Error("a merge must be \"a b\" or [\"a\", \"b\"]",
                    mwhere + ".merges[" + std::to_string(rank) + "]");
      }
      auto lookup = [&](const std::string& token) {
        int32_t id = d->token_ids.find(token);
        if (id < 0)
          throw Error("merge names unknown token '" + token + "'",
                      mwhere + ".merges[" + std::to_string(rank) + "]",
                      "every merge must join two tokens of the vocabulary");
        return id;
      };
      int32_t a = lookup(left), b = lookup(right);
      joined = left + right;
      int32_t merged = lookup(joined);
      d->bpe.add_merge(a, b, merged, static_cast<uint32_t>(rank));
    }
  }
  if (d->ignore_merges)
    for (size_t id = 0; id < n; ++id)
      if (d->flags[id] && d->raw_word_ids.find(d->token_bytes[id]) < 0)
        d->raw_word_ids.insert(d->token_bytes[id], static_cast<int32_t>(id));

  // Added tokens override the vocabulary's spelling of their id.
  for (const AddedToken& a : added) {
    d->flags[a.id] = TokenizerData::kValid | (a.special ? TokenizerData::kSpecial : 0);
    d->token_strings[a.id] = a.content;
    d->token_bytes[a.id] = bytes_of(a.content);
    d->token_ids.insert(a.content, a.id);
  }
  d->added = std::move(added);
  if (d->added.size() > 65535) throw Error("too many added tokens", where);
  d->raw_matcher.build(d->added, false);
  d->normalized_matcher.build(d->added, true);

  parse_post_processor(root, where + ": post_processor", *d);

  // Special ids: tokenizer_config.json first, config.json for what it leaves open.
  auto resolve = [&](const char* key) -> int32_t {
    std::string text = special_token_text(tokenizer_config, key, tc_where);
    if (text.empty()) return -1;
    int32_t id = d->token_ids.find(text);
    if (id < 0)
      throw Error(std::string(key) + " '" + text + "' is not a token of this tokenizer", tc_where);
    return id;
  };
  d->eos = resolve("eos_token");
  d->bos = resolve("bos_token");
  d->pad = resolve("pad_token");
  std::vector<int64_t> config_eos = config_ids(model_config, "eos_token_id", mc_where);
  auto first_valid = [&](const std::vector<int64_t>& ids) -> int32_t {
    for (int64_t id : ids)
      if (id < static_cast<int64_t>(n) && d->flags[id]) return static_cast<int32_t>(id);
    return -1;
  };
  if (d->eos < 0) d->eos = first_valid(config_eos);
  if (d->bos < 0) d->bos = first_valid(config_ids(model_config, "bos_token_id", mc_where));
  if (d->pad < 0) d->pad = first_valid(config_ids(model_config, "pad_token_id", mc_where));
  if (d->eos >= 0) d->stop_ids.push_back(d->eos);
  for (int64_t id : config_eos)
    if (id < static_cast<int64_t>(n) && d->flags[id] &&
        std::find(d->stop_ids.begin(), d->stop_ids.end(), id) == d->stop_ids.end())
      d->stop_ids.push_back(static_cast<int32_t>(id));

  return Tokenizer(std::move(d));
}

namespace {

json load_optional_json(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return json::object();
  return parse_json(read_file(path), path.string());
}

// A tokenizer.json without its model and added tokens: Qwen2's normaliser, pre-tokenizer
// and decoder.
json qwen2_tokenizer_json() {
  json root = json::object();
  root["normalizer"] = {{"type", "NFC"}};
  root["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"},
         {"pattern", {{"Regex", std::string(split_pattern_regex(SplitPattern::kQwen2))}}},
         {"behavior", "Isolated"},
         {"invert", false}},
        {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  root["decoder"] = {{"type", "ByteLevel"}};
  return root;
}

// The tokenizer.json structure of a qwen2 GGUF file's tokenizer.ggml.* metadata (vocabulary,
// token types, merges), and the special tokens for `tokenizer_config`.
json json_from_gguf(const GgufImage& img, const std::string& where, json& tokenizer_config) {
  auto get = [&](const char* key) -> const GgufValue& {
    const GgufValue* v = img.get(key);
    if (!v) throw Error(std::string("the GGUF file has no ") + key, where);
    return *v;
  };
  if (get("tokenizer.ggml.model").as_string("tokenizer.ggml.model") != "gpt2" ||
      get("tokenizer.ggml.pre").as_string("tokenizer.ggml.pre") != "qwen2")
    throw Error("the GGUF tokenizer is not gpt2 BPE with the qwen2 pre-tokenizer", where,
                "loratune reads Qwen2's tokenizer from GGUF");
  const auto& tokens = get("tokenizer.ggml.tokens").as_array("tokenizer.ggml.tokens");
  const auto& types = get("tokenizer.ggml.token_type").as_array("tokenizer.ggml.token_type");
  if (types.size() != tokens.size())
    throw Error("tokenizer.ggml.token_type and tokenizer.ggml.tokens differ in length", where);
  constexpr int64_t kNormal = 1, kControl = 3, kUserDefined = 4;
  json vocab = json::object(), added = json::array();
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& text = tokens[id].as_string("tokenizer.ggml.tokens");
    const int64_t type = types[id].as_int("tokenizer.ggml.token_type");
    if (type == kNormal) vocab[text] = id;
    if (type == kControl || type == kUserDefined)
      added.push_back({{"id", id},
                       {"content", text},
                       {"special", type == kControl},
                       {"normalized", type != kControl}});
  }
  json merges = json::array();
  for (const GgufValue& m : get("tokenizer.ggml.merges").as_array("tokenizer.ggml.merges")) {
    const std::string& line = m.as_string("tokenizer.ggml.merges");
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
      throw Error("a merge must be two tokens separated by one space", where);
    merges.push_back(json::array({line.substr(0, sp), line.substr(sp + 1)}));
  }
  json root = qwen2_tokenizer_json();
  root["model"] = {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", std::move(merges)}};
  root["added_tokens"] = std::move(added);
  for (const auto& [key, name] : {std::pair{"tokenizer.ggml.eos_token_id", "eos_token"},
                                  std::pair{"tokenizer.ggml.bos_token_id", "bos_token"},
                                  std::pair{"tokenizer.ggml.padding_token_id", "pad_token"}})
    if (const GgufValue* v = img.get(key)) {
      const int64_t id = v->as_int(key);
      if (id < 0 || static_cast<size_t>(id) >= tokens.size())
        throw Error(std::string(key) + " is outside the vocabulary", where);
      tokenizer_config[name] = tokens[static_cast<size_t>(id)].as_string(key);
    }
  return root;
}

// The tokenizer.json structure for a vocab.json + merges.txt folder (Qwen2Tokenizer's rules).
json json_from_slow_files(const fs::path& dir, const json& tokenizer_config) {
  const fs::path vocab_path = dir / "vocab.json", merges_path = dir / "merges.txt";
  json root = qwen2_tokenizer_json();
  json model = {{"type", "BPE"}};
  model["vocab"] = parse_json(read_file(vocab_path), vocab_path.string());
  json merges = json::array();
  std::istringstream lines(read_file(merges_path));
  std::string line;
  for (size_t number = 1; std::getline(lines, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || (number == 1 && line.rfind("#version", 0) == 0)) continue;
    if (!is_valid_utf8(line))
      throw Error("merges.txt is not valid UTF-8",
                  merges_path.string() + ":" + std::to_string(number));
    size_t sp = line.find(' ');
    if (sp == std::string::npos || line.find(' ', sp + 1) != std::string::npos)
      throw Error("a merge line must be two tokens separated by one space",
                  merges_path.string() + ":" + std::to_string(number));
    merges.push_back(json::array({line.substr(0, sp), line.substr(sp + 1)}));
  }
  model["merges"] = std::move(merges);
  root["model"] = std::move(model);

  // added_tokens.json: content -> id. Flags come from added_tokens_decoder when it lists the id;
  // otherwise a token is special when the config names it as one.
  json added = json::array();
  const fs::path added_path = dir / "added_tokens.json";
  json added_map = load_optional_json(added_path);
  if (!added_map.is_object()) throw Error("expected an object of token -> id", added_path.string());
  std::vector<std::string> special_names;
  for (const char* key : {"eos_token", "bos_token", "pad_token", "unk_token"}) {
    std::string s = special_token_text(tokenizer_config, key, "tokenizer_config.json");
    if (!s.empty()) special_names.push_back(s);
  }
  if (const json* extra = member(tokenizer_config, "additional_special_tokens");
      extra && extra->is_array())
    for (const json& e : *extra)
      if (e.is_string()) special_names.push_back(e.get<std::string>());
  for (auto it = added_map.begin(); it != added_map.end(); ++it) {
    bool special =
        std::find(special_names.begin(), special_names.end(), it.key()) != special_names.end();
    added.push_back({{"id", it.value()},
                     {"content", it.key()},
                     {"special", special},
                     {"normalized", !special}});
  }
  root["added_tokens"] = std::move(added);
  return root;
}

}  // namespace

Tokenizer Tokenizer::from_json(std::string_view tokenizer_json, const std::string& where) {
  return TokenizerBuilder::build(parse_json(tokenizer_json, where), where, json::object(), "",
                                 json::object(), "");
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::error_code ec;
  fs::path p(path);
  if (is_gguf_file(path)) {
    const GgufFile file(path);
    json tc = json::object();
    json root = json_from_gguf(file.image(), path, tc);
    return TokenizerBuilder::build(root, path, tc, path, json::object(), path);
  }
  if (fs::is_regular_file(p, ec)) {
    fs::path dir = p.parent_path();
    json tc = load_optional_json(dir / "tokenizer_config.json");
    json mc = load_optional_json(dir / "config.json");
    return TokenizerBuilder::build(parse_json(read_file(p), p.string()), p.string(), tc,
                                   (dir / "tokenizer_config.json").string(), mc,
                                   (dir / "config.json").string());
  }
  if (!fs::is_directory(p, ec))
    throw Error("no such model folder", path, "pass the folder that holds tokenizer.json");
  const fs::path tc_path = p / "tokenizer_config.json", mc_path = p / "config.json";
  json tc = load_optional_json(tc_path);
  json mc = load_optional_json(mc_path);
  if (fs::is_regular_file(p / "tokenizer.json", ec)) {
    const fs::path tj = p / "tokenizer.json";
    return TokenizerBuilder::build(parse_json(read_file(tj), tj.string()), tj.string(), tc,
                                   tc_path.string(), mc, mc_path.string());
  }
  if (fs::is_regular_file(p / "vocab.json", ec) && fs::is_regular_file(p / "merges.txt", ec))
    return TokenizerBuilder::build(json_from_slow_files(p, tc), (p / "vocab.json").string(), tc,
                                   tc_path.string(), mc, mc_path.string());
  throw Error("no tokenizer in the model folder", path,
              "expected tokenizer.json, or vocab.json and merges.txt");
}

}  // namespace loratune::tokenizer
