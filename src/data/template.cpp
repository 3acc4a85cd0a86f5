#include "data/template.h"

#include <fstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"

namespace loratune::data {

namespace {

std::string chatml_prompt(std::string_view user, std::string_view system) {
  std::string s = "<|im_start|>system\n";
  s += system.empty() ? kDefaultSystemPrompt : system;
  s += "<|im_end|>\n<|im_start|>user\n";
  s += user;
  s += "<|im_end|>\n<|im_start|>assistant\n";
  return s;
}

std::string_view trimmed(std::string_view s) {
  const size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1);
}

std::string llama3_turn(std::string_view role, std::string_view content) {
  std::string s = "<|start_header_id|>";
  s += role;
  s += "<|end_header_id|>\n\n";
  s += trimmed(content);
  s += "<|eot_id|>";
  return s;
}

// Llama 3's prompt: begin of text, the system turn when there is one, the earlier turns, the
// user's turn and the assistant's header.
std::string llama3_prompt(std::string_view user, std::string_view system,
                          std::span<const std::pair<std::string, std::string>> history) {
  std::string s = "<|begin_of_text|>";
  if (!system.empty()) s += llama3_turn("system", system);
  for (const auto& [u, a] : history) s += llama3_turn("user", u) + llama3_turn("assistant", a);
  s += llama3_turn("user", user);
  s += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return s;
}

// Stanford Alpaca's prompt, with and without the input field.
std::string alpaca_prompt(std::string_view instruction, std::string_view input) {
  std::string s = input.empty()
                      ? "Below is an instruction that describes a task. Write a response that "
                        "appropriately completes the request.\n\n"
                      : "Below is an instruction that describes a task, paired with an input that "
                        "provides further context. Write a response that appropriately completes "
                        "the request.\n\n";
  s += "### Instruction:\n";
  s += instruction;
  if (!input.empty()) {
    s += "\n\n### Input:\n";
    s += input;
  }
  s += "\n\n### Response:\n";
  return s;
}

// The earlier turns of a conversation in the template's own format.
std::string history_text(TemplateKind kind,
                         std::span<const std::pair<std::string, std::string>> history) {
  std::string s;
  for (const auto& [user, assistant] : history) {
    if (kind == TemplateKind::kSeed) {
      s += "Instruction: " + user + "\nOutput: " + assistant + "\n";
    } else if (kind == TemplateKind::kAlpaca) {
      s += "### Instruction:\n" + user + "\n\n### Response:\n" + assistant + "\n\n";
    } else {
      s += "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n" + assistant +
           "<|im_end|>\n";
    }
  }
  return s;
}

}  // namespace

TemplateKind parse_template_kind(std::string_view name) {
  if (name == "seed") return TemplateKind::kSeed;
  if (name == "chatml") return TemplateKind::kChatML;
  if (name == "alpaca") return TemplateKind::kAlpaca;
  if (name == "llama3") return TemplateKind::kLlama3;
  throw UsageError("unknown prompt template '" + std::string(name) + "'", "--template",
                   "use seed, alpaca, chatml or llama3");
}

const char* template_name(TemplateKind kind) {
  switch (kind) {
    case TemplateKind::kSeed:
      return "seed";
    case TemplateKind::kAlpaca:
      return "alpaca";
    case TemplateKind::kChatML:
      return "chatml";
    case TemplateKind::kLlama3:
      return "llama3";
  }
  return "?";
}

PromptParts apply_template(TemplateKind kind, const Example& example) {
  PromptParts parts;
  if (kind == TemplateKind::kSeed) {
    parts.prompt = "Instruction: " + example.instruction + "\n";
    if (!example.input.empty()) parts.prompt += "Input: " + example.input + "\n";
    parts.prompt += "Output: ";
  } else if (kind == TemplateKind::kAlpaca) {
    parts.prompt = alpaca_prompt(example.instruction, example.input);
  } else if (kind == TemplateKind::kLlama3) {
    std::string user = example.instruction;
    if (!example.input.empty()) user += "\n" + example.input;
    parts.prompt = llama3_prompt(user, example.system, {});
  } else {
    std::string user = example.instruction;
    if (!example.input.empty()) user += "\n" + example.input;
    parts.prompt = chatml_prompt(user, example.system);
  }
  parts.completion = example.output;
  return parts;
}

PromptParts apply_template_with_history(
    TemplateKind kind, const Example& example,
    std::span<const std::pair<std::string, std::string>> history) {
  PromptParts parts = apply_template(kind, example);
  if (history.empty()) return parts;
  if (kind == TemplateKind::kLlama3) {
    std::string user = example.instruction;
    if (!example.input.empty()) user += "\n" + example.input;
    parts.prompt = llama3_prompt(user, example.system, history);
    return parts;
  }
  std::string turns = history_text(kind, history);
  if (kind != TemplateKind::kChatML) {
    parts.prompt.insert(0, turns);
  } else {
    // After the system block, before the final user turn.
    std::string_view system = example.system.empty() ? kDefaultSystemPrompt : example.system;
    size_t system_end = std::string_view("<|im_start|>system\n").size() + system.size() +
                        std::string_view("<|im_end|>\n").size();
    parts.prompt.insert(system_end, turns);
  }
  return parts;
}

std::string generation_prompt(TemplateKind kind, std::string_view prompt, std::string_view system) {
  if (kind == TemplateKind::kSeed) return "Instruction: " + std::string(prompt) + "\nOutput: ";
  if (kind == TemplateKind::kAlpaca) return alpaca_prompt(prompt, "");
  if (kind == TemplateKind::kLlama3) return llama3_prompt(prompt, system, {});
  return chatml_prompt(prompt, system);
}

std::optional<TemplateKind> read_adapter_template(const std::string& adapter_dir) {
  const std::string path = adapter_dir + "/prompt_template.json";
  if (!std::ifstream(path).good()) return std::nullopt;
  const Json j = read_json_file(path);
  if (!j.is_object() || !j.contains("template") || !j["template"].is_string())
    throw UsageError("prompt_template.json must hold {\"template\": NAME}", path);
  return parse_template_kind(j["template"].get<std::string>());
}

void write_adapter_template(const std::string& adapter_dir, TemplateKind kind) {
  write_file_atomic(adapter_dir + "/prompt_template.json",
                    Json{{"template", template_name(kind)}}.dump(2) + "\n");
}

std::optional<TemplateKind> model_chat_template(const std::string& model_dir) {
  const std::string path = model_dir + "/tokenizer_config.json";
  if (!std::ifstream(path).good()) return std::nullopt;
  const Json j = read_json_file(path);
  if (!j.is_object() || !j.contains("chat_template") || !j["chat_template"].is_string())
    return std::nullopt;
  const std::string t = j["chat_template"].get<std::string>();
  if (t.find("<|im_start|>") != std::string::npos) return TemplateKind::kChatML;
  if (t.find("<|start_header_id|>") != std::string::npos) return TemplateKind::kLlama3;
  return std::nullopt;
}

const char* template_end_token(TemplateKind kind) {
  if (kind == TemplateKind::kChatML) return "<|im_end|>";
  if (kind == TemplateKind::kLlama3) return "<|eot_id|>";
  return "<|endoftext|>";
}

bool template_has_end_token(TemplateKind kind) {
  return kind == TemplateKind::kChatML || kind == TemplateKind::kLlama3;
}

}  // namespace loratune::data
