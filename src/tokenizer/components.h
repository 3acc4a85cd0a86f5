// Internal: the text pipeline of tokenizer.json (normalizer, pre_tokenizer, decoder) and its
// post_processor, read into a TokenizerData.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "tokenizer/tokenizer_data.h"

namespace loratune::tokenizer {

// Sets d.alphabet (from the decoder), d.normalizers, d.pattern or d.metaspace, and d.decoder.
void parse_text_pipeline(const nlohmann::json& root, const std::string& where, TokenizerData& d);

// Sets d.prefix_ids and d.suffix_ids from a TemplateProcessing post-processor (alone or in a
// Sequence); d.flags must already hold every token.
void parse_post_processor(const nlohmann::json& root, const std::string& where, TokenizerData& d);

}  // namespace loratune::tokenizer
