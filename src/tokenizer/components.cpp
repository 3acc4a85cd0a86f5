#include "tokenizer/components.h"

#include "core/error.h"
#include "tokenizer/json_fields.h"

namespace loratune::tokenizer {

using nlohmann::json;

namespace {

constexpr const char* kSupported =
    "loratune implements byte-level BPE (Qwen2, Llama 3) and SentencePiece-style BPE with "
    "byte fallback (Llama 2, Mistral)";

const json& list_member(const json& obj, const char* key, const std::string& where) {
  const json* list = member(obj, key);
  if (!list || !list->is_array()) throw Error(std::string("'") + key + "' must be a list", where);
  return *list;
}

// {"String": "x"} of a Replace step; a regex pattern is not implemented.
std::string string_pattern(const json& step, const std::string& where) {
  const json* pattern = member(step, "pattern");
  const json* text = pattern ? member(*pattern, "String") : nullptr;
  if (!text || !text->is_string() || text->get<std::string>().empty())
    throw Error("a Replace needs a non-empty {\"String\": ...} pattern", where, kSupported);
  return text->get<std::string>();
}

void parse_normalizer(const json* n, const std::string& where, std::vector<NormalizerStep>& out) {
  if (!n) return;
  const std::string type = type_of(*n, where);
  if (type == "Sequence") {
    for (const json& item : list_member(*n, "normalizers", where))
      parse_normalizer(&item, where, out);
  } else if (type == "NFC") {
    out.push_back({NormalizerStep::Kind::kNfc, "", ""});
  } else if (type == "Prepend") {
    out.push_back({NormalizerStep::Kind::kPrepend, get_string(*n, "prepend", where), ""});
  } else if (type == "Replace") {
    out.push_back({NormalizerStep::Kind::kReplace, string_pattern(*n, where),
                   get_string(*n, "content", where)});
  } else {
    throw Error("unsupported normalizer '" + type + "'", where,
                "loratune implements NFC, Prepend and Replace (of a string)");
  }
}

void check_byte_level(const json& p, bool allow_regex, const std::string& where) {
  if (get_bool(p, "add_prefix_space", false, where))
    throw Error("ByteLevel add_prefix_space=true is not supported", where);
  if (!allow_regex && get_bool(p, "use_regex", true, where))
    throw Error("a ByteLevel pre-tokenizer after a Split must have use_regex=false", where);
}

SplitPattern parse_split(const json& p, const std::string& where) {
  const json* pattern = member(p, "pattern");
  const json* regex = pattern ? member(*pattern, "Regex") : nullptr;
  if (!regex || !regex->is_string())
    throw Error("the Split pre-tokenizer needs a {\"Regex\": ...} pattern", where);
  std::string behavior = get_string(p, "behavior", where);
  if (behavior != "Isolated" || get_bool(p, "invert", false, where))
    throw Error("unsupported Split behavior '" + behavior + "'", where,
                "loratune implements behavior \"Isolated\" without invert");
  auto kind = split_pattern_from_regex(regex->get<std::string>());
  if (!kind)
    throw Error("unsupported pre-tokenizer regex " + regex->dump(), where,
                "loratune implements the Qwen2, Llama-3 and GPT-2 split patterns");
  return *kind;
}

// ByteLevel with its GPT-2 regex.
SplitPattern parse_byte_level_regex(const json& p, const std::string& where) {
  check_byte_level(p, true, where);
  if (!get_bool(p, "use_regex", true, where))
    throw Error("a ByteLevel pre-tokenizer without regex is not supported", where);
  return SplitPattern::kGpt2;
}

void parse_byte_level_pre_tokenizer(const json* p, const std::string& where, TokenizerData& d) {
  if (!p) throw Error("missing pre_tokenizer", where, "a byte-level BPE needs one");
  std::string type = type_of(*p, where);
  if (type == "ByteLevel") {
    d.pattern = parse_byte_level_regex(*p, where);
    return;
  }
  if (type == "Sequence") {
    const json* list = member(*p, "pretokenizers");
    if (list && list->is_array() && list->size() == 2) {
      const std::string first = type_of((*list)[0], where), second = type_of((*list)[1], where);
      if (first == "Split" && second == "ByteLevel") {
        check_byte_level((*list)[1], false, where);
        d.pattern = parse_split((*list)[0], where);
        return;
      }
      if (first == "Digits" && second == "ByteLevel") {
        d.digits = get_bool((*list)[0], "individual_digits", false, where)
                       ? TokenizerData::Digits::kEach
                       : TokenizerData::Digits::kRuns;
        d.pattern = parse_byte_level_regex((*list)[1], where);
        return;
      }
    }
  }
  throw Error("unsupported pre_tokenizer '" + type + "'", where,
              "a byte-level BPE needs Sequence[Split(regex), ByteLevel], "
              "Sequence[Digits, ByteLevel] or ByteLevel");
}

// prepend_scheme (or the older add_prefix_space) of a Metaspace component.
MetaspaceRule::Prepend prepend_scheme(const json& m, const std::string& where) {
  const std::string scheme = get_string(m, "prepend_scheme", where);
  if (scheme.empty())
    return get_bool(m, "add_prefix_space", true, where) ? MetaspaceRule::Prepend::kAlways
                                                        : MetaspaceRule::Prepend::kNever;
  if (scheme == "always") return MetaspaceRule::Prepend::kAlways;
  if (scheme == "first") return MetaspaceRule::Prepend::kFirst;
  if (scheme == "never") return MetaspaceRule::Prepend::kNever;
  throw Error("unknown Metaspace prepend_scheme '" + scheme + "'", where,
              "expected always, first or never");
}

std::string replacement_of(const json& m, const std::string& where) {
  std::string r = get_string(m, "replacement", where);
  if (r.empty()) throw Error("a Metaspace needs a \"replacement\" character", where);
  return r;
}

MetaspaceRule parse_sentencepiece_pre_tokenizer(const json* p, const std::string& where) {
  MetaspaceRule rule;
  if (!p) return rule;
  if (type_of(*p, where) != "Metaspace")
    throw Error("unsupported pre_tokenizer '" + type_of(*p, where) + "' for SentencePiece tokens",
                where, "expected none or Metaspace");
  rule.enabled = true;
  rule.replacement = replacement_of(*p, where);
  rule.prepend = prepend_scheme(*p, where);
  rule.split = get_bool(*p, "split", true, where);
  return rule;
}

// One decoder of a SentencePiece-style chain. `fused`: a Fuse came before (Strip then acts on
// the whole text, which is all that is implemented).
void parse_sentencepiece_decoder(const json& step, const std::string& where, bool& fused,
                                 DecoderRule& rule) {
  const std::string type = type_of(step, where);
  if (type == "Replace") {
    if (get_string(step, "content", where) != " ")
      throw Error("a Replace decoder must put back a space", where, kSupported);
    rule.space_symbol = string_pattern(step, where);
  } else if (type == "ByteFallback") {
    rule.byte_tokens = true;
  } else if (type == "Fuse") {
    fused = true;
  } else if (type == "Strip") {
    if (!fused || get_string(step, "content", where) != " " || get_int(step, "stop", 0, where) != 0)
      throw Error("only a Strip of leading spaces after Fuse is supported", where);
    rule.strip_leading_spaces = static_cast<int>(get_int(step, "start", 0, where));
  } else if (type == "Metaspace") {
    rule.space_symbol = replacement_of(step, where);
    rule.first_token_drops_spaces = prepend_scheme(step, where) != MetaspaceRule::Prepend::kNever;
  } else {
    throw Error("unsupported decoder '" + type + "'", where, kSupported);
  }
}

}  // namespace

void parse_text_pipeline(const json& root, const std::string& where, TokenizerData& d) {
  const std::string dwhere = where + ": decoder";
  const json* decoder = member(root, "decoder");
  if (!decoder) throw Error("missing decoder", dwhere, kSupported);
  const std::string type = type_of(*decoder, dwhere);
  d.alphabet = type == "ByteLevel" ? Alphabet::kByteLevel : Alphabet::kSentencePiece;
  if (d.alphabet == Alphabet::kSentencePiece) {
    bool fused = false;
    if (type == "Sequence") {
      for (const json& step : list_member(*decoder, "decoders", dwhere))
        parse_sentencepiece_decoder(step, dwhere, fused, d.decoder);
    } else {
      parse_sentencepiece_decoder(*decoder, dwhere, fused, d.decoder);
    }
    if (d.decoder.space_symbol.empty())
      throw Error("the decoder never turns a token back into a space", dwhere, kSupported);
  }

  parse_normalizer(member(root, "normalizer"), where + ": normalizer", d.normalizers);
  const json* pre = member(root, "pre_tokenizer");
  const std::string pwhere = where + ": pre_tokenizer";
  if (d.alphabet == Alphabet::kByteLevel)
    parse_byte_level_pre_tokenizer(pre, pwhere, d);
  else
    d.metaspace = parse_sentencepiece_pre_tokenizer(pre, pwhere);
}

namespace {

// One post-processor: ByteLevel (no tokens), a Sequence of them, or TemplateProcessing.
void parse_processor(const json* p, const std::string& where, TokenizerData& d) {
  const std::string type = type_of(*p, where);
  if (type == "ByteLevel") return;
  if (type == "Sequence") {
    for (const json& item : list_member(*p, "processors", where)) parse_processor(&item, where, d);
    return;
  }
  if (type != "TemplateProcessing")
    throw Error("unsupported post_processor '" + type + "'", where,
                "loratune implements TemplateProcessing and ByteLevel");
  if (!d.prefix_ids.empty() || !d.suffix_ids.empty())
    throw Error("more than one TemplateProcessing", where);
  const json* specials = member(*p, "special_tokens");
  bool after_sequence = false;
  for (const json& item : list_member(*p, "single", where)) {
    if (const json* seq = member(item, "Sequence")) {
      if (after_sequence || get_string(*seq, "id", where) != "A")
        throw Error("the single template must hold the sequence $A once", where);
      after_sequence = true;
      continue;
    }
    const json* special = member(item, "SpecialToken");
    if (!special) throw Error("a template item must be a SpecialToken or a Sequence", where);
    const std::string name = get_string(*special, "id", where);
    const json* entry = specials ? member(*specials, name.c_str()) : nullptr;
    if (!entry) throw Error("the template names '" + name + "', which special_tokens lacks", where);
    for (const json& id_value : list_member(*entry, "ids", where)) {
      const int64_t id = get_id(id_value, where);
      if (id >= static_cast<int64_t>(d.flags.size()) || !d.flags[id])
        throw Error("the template's token id " + std::to_string(id) + " is not in the vocabulary",
                    where);
      (after_sequence ? d.suffix_ids : d.prefix_ids).push_back(static_cast<int32_t>(id));
    }
  }
  if (!after_sequence) throw Error("the single template lacks the sequence $A", where);
}

}  // namespace

void parse_post_processor(const json& root, const std::string& where, TokenizerData& d) {
  if (const json* p = member(root, "post_processor")) parse_processor(p, where, d);
}

}  // namespace loratune::tokenizer
