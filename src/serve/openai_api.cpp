#include "serve/openai_api.h"

#include <random>

namespace loratune::serve {

namespace {

ApiError bad_field(const std::string& field, const std::string& what) {
  return ApiError(400, "'" + field + "' " + what, field);
}

// The field's value when present and not null, else nullptr.
const Json* field(const Json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number_in(const Json& body, const char* name, double fallback, double lo, double hi,
                 bool lo_open) {
  const Json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number()) throw bad_field(name, "must be a number");
  const double x = v->get<double>();
  if (x < lo || (lo_open && x == lo) || x > hi)
    throw bad_field(name, "must be in " + std::string(lo_open ? "(" : "[") + std::to_string(lo) +
                              ", " + std::to_string(hi) + "]");
  return x;
}

long long integer(const Json& body, const char* name, long long fallback) {
  const Json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_number_integer()) throw bad_field(name, "must be an integer");
  return v->get<long long>();
}

bool boolean(const Json& body, const char* name) {
  const Json* v = field(body, name);
  if (!v) return false;
  if (!v->is_boolean()) throw bad_field(name, "must be a boolean");
  return v->get<bool>();
}

// A text prompt's ids, with the BOS of models whose tokenizer adds one (as vLLM and
// llama-server do).
std::vector<int> encode(const tokenizer::Tokenizer& tok, const std::string& text) {
  std::vector<int32_t> ids;
  tok.encode_prompt_into(text, ids);
  return std::vector<int>(ids.begin(), ids.end());
}

// "prompt": a string, a list of one string, or a list of token ids.
std::vector<int> completion_prompt(const Json& body, const ApiContext& ctx) {
  const Json* p = field(body, "prompt");
  if (!p) throw bad_field("prompt", "is required");
  if (p->is_string()) return encode(ctx.tokenizer, p->get<std::string>());
  if (p->is_array() && p->size() == 1 && (*p)[0].is_string())
    return encode(ctx.tokenizer, (*p)[0].get<std::string>());
  if (p->is_array() && !p->empty() && (*p)[0].is_number_integer()) {
    std::vector<int> ids;
    for (const Json& id : *p) {
      if (!id.is_number_integer() || id.get<long long>() < 0 ||
          id.get<long long>() >= ctx.tokenizer.vocab_size())
        throw bad_field("prompt", "holds a token id outside the vocabulary");
      ids.push_back(id.get<int>());
    }
    return ids;
  }
  throw bad_field("prompt", "must be a string, or a list of token ids (one prompt per request)");
}

// A message's content: a string, or a list of {"type": "text", "text": ...} parts.
std::string message_text(const Json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (content.is_array()) {
    std::string text;
    for (const Json& part : content) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string())
        throw bad_field("messages", "content parts must be {\"type\": \"text\", \"text\": ...}");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw bad_field("messages", "content must be a string or a list of text parts");
}

// "messages" in the model's chat template: system messages first, then user and assistant
// turns in alternation, ending with the user's.
std::vector<int> chat_prompt(const Json& body, const ServedModel& model, const ApiContext& ctx) {
  const Json* messages = field(body, "messages");
  if (!messages || !messages->is_array() || messages->empty())
    throw bad_field("messages", "must be a non-empty list");
  std::string system;
  std::vector<std::pair<std::string, std::string>> turns;
  std::string user;
  bool have_user = false;
  for (const Json& m : *messages) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content"))
      throw bad_field("messages", "items must be objects with a role and a content");
    const std::string role = m["role"].get<std::string>();
    const std::string text = message_text(m["content"]);
    if (role == "system" || role == "developer") {
      if (have_user || !turns.empty())
        throw bad_field("messages", "system messages must come first");
      system += system.empty() ? text : "\n" + text;
    } else if (role == "user") {
      if (have_user) throw bad_field("messages", "two user messages in a row");
      user = text;
      have_user = true;
    } else if (role == "assistant") {
      if (!have_user) throw bad_field("messages", "an assistant message must follow a user one");
      turns.emplace_back(user, text);
      have_user = false;
    } else {
      throw bad_field("messages", "role '" + role + "' is not system, user or assistant");
    }
  }
  if (!have_user) throw bad_field("messages", "the last message must be the user's");
  data::Example ex;
  ex.instruction = user;
  ex.system = system;
  return encode(ctx.tokenizer,
                data::apply_template_with_history(model.chat_template, ex, turns).prompt);
}

std::vector<std::string> stop_strings(const Json& body) {
  const Json* stop = field(body, "stop");
  if (!stop) return {};
  std::vector<std::string> out;
  if (stop->is_string()) {
    out.push_back(stop->get<std::string>());
  } else if (stop->is_array()) {
    for (const Json& s : *stop) {
      if (!s.is_string()) throw bad_field("stop", "must be a string or a list of strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    throw bad_field("stop", "must be a string or a list of strings");
  }
  std::erase_if(out, [](const std::string& s) { return s.empty(); });
  return out;
}

Json usage(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens},
          {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

bool is_chat(const ResponseInfo& info) {
  return info.endpoint == Endpoint::kChatCompletions;
}

}  // namespace

Json error_body(const ApiError& e) {
  return {{"error",
           {{"message", e.what()},
            {"type", e.type},
            {"param", e.param.empty() ? Json() : Json(e.param)},
            {"code", e.code.empty() ? Json() : Json(e.code)}}}};
}

ParsedRequest parse_request(Endpoint endpoint, const std::string& body_text,
                            const ApiContext& ctx) {
  Json body;
  try {
    body = Json::parse(body_text);
  } catch (const nlohmann::json::exception& e) {
    throw ApiError(400, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, "the body must be a JSON object");
  const Json* model_name = field(body, "model");
  if (!model_name || !model_name->is_string()) throw bad_field("model", "must be a string");
  ParsedRequest r;
  for (const ServedModel& m : ctx.models)
    if (m.name == model_name->get<std::string>()) r.model = &m;
  if (!r.model)
    throw ApiError(404, "The model '" + model_name->get<std::string>() + "' does not exist",
                   "model", "model_not_found");
  if (integer(body, "n", 1) != 1) throw bad_field("n", "must be 1");

  GenerationRequest& g = r.generation;
  g.adapter = r.model->adapter;
  const bool chat = endpoint == Endpoint::kChatCompletions;
  g.prompt = chat ? chat_prompt(body, *r.model, ctx) : completion_prompt(body, ctx);
  if (g.prompt.empty()) throw bad_field(chat ? "messages" : "prompt", "gives no tokens");
  const int room = ctx.context - static_cast<int>(g.prompt.size());
  const char* max_name =
      chat && field(body, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  const long long max_tokens = integer(body, max_name, chat ? room : 16);
  if (max_tokens < 1) throw bad_field(max_name, "must be at least 1");
  if (room < 1 || max_tokens > room)
    throw ApiError(400,
                   "This model's context is " + std::to_string(ctx.context) +
                       " tokens; the prompt has " + std::to_string(g.prompt.size()) + " and " +
                       std::to_string(max_tokens) + " more were asked for",
                   chat ? "messages" : "prompt", "context_length_exceeded");
  g.max_tokens = static_cast<int>(max_tokens);

  const GenerationConfig& gc = ctx.generation;
  SamplingOptions& s = g.sampling;
  const double temperature = number_in(body, "temperature", gc.temperature, 0, 2, false);
  s.do_sample = field(body, "temperature") ? temperature > 0 : gc.do_sample;
  s.temperature = static_cast<float>(temperature > 0 ? temperature : 1.0);
  s.top_p = static_cast<float>(number_in(body, "top_p", gc.top_p, 0, 1, true));
  const long long top_k = integer(body, "top_k", gc.top_k);
  if (top_k < -1) throw bad_field("top_k", "must be -1 (all), 0 (all) or positive");
  s.top_k = static_cast<int>(std::max(0LL, top_k));
  s.repetition_penalty = static_cast<float>(
      number_in(body, "repetition_penalty", gc.repetition_penalty, 0, 1e6, true));
  s.seed = field(body, "seed")
               ? static_cast<uint64_t>(integer(body, "seed", 0))
               : (static_cast<uint64_t>(std::random_device()()) << 32) | std::random_device()();
  g.stop = stop_strings(body);
  g.eos_ids = ctx.eos_ids;
  if (chat && data::template_has_end_token(r.model->chat_template))
    if (auto end = ctx.tokenizer.token_id(data::template_end_token(r.model->chat_template)))
      g.eos_ids.push_back(*end);

  r.stream = boolean(body, "stream");
  r.return_token_ids = boolean(body, "return_token_ids");
  if (const Json* opts = field(body, "stream_options")) {
    if (!opts->is_object()) throw bad_field("stream_options", "must be an object");
    r.include_usage = boolean(*opts, "include_usage");
  }
  return r;
}

Json completion_body(const ResponseInfo& info, const std::string& text, FinishReason reason,
                     int prompt_tokens, int completion_tokens, const std::vector<int>* token_ids) {
  Json choice = {
      {"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish_reason_name(reason)}};
  if (token_ids) choice["token_ids"] = *token_ids;
  if (is_chat(info))
    choice["message"] = {{"role", "assistant"}, {"content", text}};
  else
    choice["text"] = text;
  return {{"id", info.id},
          {"object", is_chat(info) ? "chat.completion" : "text_completion"},
          {"created", info.created},
          {"model", info.model},
          {"choices", Json::array({choice})},
          {"usage", usage(prompt_tokens, completion_tokens)}};
}

Json chunk_body(const ResponseInfo& info, const std::string& text, bool first,
                const FinishReason* reason) {
  Json choice = {{"index", 0},
                 {"logprobs", nullptr},
                 {"finish_reason", reason ? Json(finish_reason_name(*reason)) : Json()}};
  if (is_chat(info)) {
    Json delta = Json::object();
    if (first) delta["role"] = "assistant";
    if (!text.empty() || first) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  return {{"id", info.id},
          {"object", is_chat(info) ? "chat.completion.chunk" : "text_completion"},
          {"created", info.created},
          {"model", info.model},
          {"choices", Json::array({choice})}};
}

Json usage_chunk_body(const ResponseInfo& info, int prompt_tokens, int completion_tokens) {
  return {{"id", info.id},
          {"object", is_chat(info) ? "chat.completion.chunk" : "text_completion"},
          {"created", info.created},
          {"model", info.model},
          {"choices", Json::array()},
          {"usage", usage(prompt_tokens, completion_tokens)}};
}

Json models_body(const std::vector<ServedModel>& models, long long created) {
  Json data = Json::array();
  for (const ServedModel& m : models)
    data.push_back(
        {{"id", m.name}, {"object", "model"}, {"created", created}, {"owned_by", "loratune"}});
  return {{"object", "list"}, {"data", data}};
}

}  // namespace loratune::serve
