#include "data/template.h"

#include "core/error.h"

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

// The earlier turns of a conversation in the template's own format.
std::string history_text(TemplateKind kind,
                         std::span<const std::pair<std::string, std::string>> history) {
  std::string s;
  for (const auto& [user, assistant] : history) {
    if (kind == TemplateKind::kSeed) {
      s += "Instruction: " + user + "\nOutput: " + assistant + "\n";
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
  throw UsageError("unknown prompt template '" + std::string(name) + "'", "--template",
                   "use seed or chatml");
}

const char* template_name(TemplateKind kind) {
  return kind == TemplateKind::kSeed ? "seed" : "chatml";
}

PromptParts apply_template(TemplateKind kind, const Example& example) {
  PromptParts parts;
  if (kind == TemplateKind::kSeed) {
    parts.prompt = "Instruction: " + example.instruction + "\n";
    if (!example.input.empty()) parts.prompt += "Input: " + example.input + "\n";
    parts.prompt += "Output: ";
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
  if (kind == TemplateKind::kSeed) {
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
  return chatml_prompt(prompt, system);
}

const char* template_end_token(TemplateKind kind) {
  return kind == TemplateKind::kSeed ? "<|endoftext|>" : "<|im_end|>";
}

}  // namespace loratune::data
