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
  throw UsageError("unknown prompt template '" + std::string(name) + "'", "--template",
                   "use seed, alpaca or chatml");
}

const char* template_name(TemplateKind kind) {
  switch (kind) {
    case TemplateKind::kSeed:
      return "seed";
    case TemplateKind::kAlpaca:
      return "alpaca";
    case TemplateKind::kChatML:
      return "chatml";
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
  if (j.is_object() && j.contains("chat_template") && j["chat_template"].is_string() &&
      j["chat_template"].get<std::string>().find("<|im_start|>") != std::string::npos)
    return TemplateKind::kChatML;
  return std::nullopt;
}

const char* template_end_token(TemplateKind kind) {
  return kind == TemplateKind::kChatML ? "<|im_end|>" : "<|endoftext|>";
}

}  // namespace loratune::data
