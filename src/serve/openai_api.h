// The OpenAI API's request and response bodies for /v1/completions and /v1/chat/completions:
// a request is checked and turned into a GenerationRequest, or refused with the status and
// error object the OpenAI API answers with.
#pragma once

#include <stdexcept>
#include <string>
#include <vector>

#include "data/template.h"
#include "io/json_file.h"
#include "model/config.h"
#include "serve/engine.h"
#include "tokenizer/tokenizer.h"

namespace loratune::serve {

// A refused request: HTTP status and the fields of OpenAI's {"error": {...}} object.
struct ApiError : std::runtime_error {
  ApiError(int status, const std::string& message, const std::string& param = "",
           const std::string& code = "", const std::string& type = "invalid_request_error")
      : std::runtime_error(message), status(status), param(param), code(code), type(type) {}
  int status;
  std::string param, code, type;
};
Json error_body(const ApiError& e);

// A name the `model` field may give: the base model, or an adapter on it.
struct ServedModel {
  std::string name;
  const LoraAdapter* adapter = nullptr;
  data::TemplateKind chat_template = data::TemplateKind::kChatML;
};

enum class Endpoint { kCompletions, kChatCompletions };

// What the request parsing needs to know about the server.
struct ApiContext {
  const tokenizer::Tokenizer& tokenizer;
  const GenerationConfig& generation;  // defaults of the sampling fields
  std::vector<int> eos_ids;            // end generation with every model
  const std::vector<ServedModel>& models;
  int context = 0;
};

struct ParsedRequest {
  const ServedModel* model = nullptr;
  GenerationRequest generation;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool return_token_ids = false;  // the generated ids in each choice ("token_ids", as vLLM)
};

// Throws ApiError for malformed JSON (400), an unknown model (404), a wrong field (400,
// naming it) or a prompt that does not fit the context with max_tokens (400).
ParsedRequest parse_request(Endpoint endpoint, const std::string& body, const ApiContext& ctx);

// The response bodies. `id` and `created` are the same for every chunk of one response.
struct ResponseInfo {
  Endpoint endpoint;
  std::string id;
  long long created;
  std::string model;
};
// `token_ids` (the generated ids) is added to the choice when not null.
Json completion_body(const ResponseInfo& info, const std::string& text, FinishReason reason,
                     int prompt_tokens, int completion_tokens,
                     const std::vector<int>* token_ids = nullptr);
// One streamed chunk: `text` as the delta; `first` adds the assistant role (chat); a finish
// reason ends the choice.
Json chunk_body(const ResponseInfo& info, const std::string& text, bool first,
                const FinishReason* reason);
// The last chunk when stream_options.include_usage: no choices, the usage.
Json usage_chunk_body(const ResponseInfo& info, int prompt_tokens, int completion_tokens);
Json models_body(const std::vector<ServedModel>& models, long long created);

}  // namespace loratune::serve
