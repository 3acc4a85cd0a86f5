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

std::string generation_prompt(TemplateKind kind, std::string_view prompt, std::string_view system) {
  if (kind == TemplateKind::kSeed) return "Instruction: " + std::string(prompt) + "\nOutput: ";
  return chatml_prompt(prompt, system);
}

const char* template_end_token(TemplateKind kind) {
  return kind == TemplateKind::kSeed ? "<|endoftext|>" : "<|im_end|>";
}

}  // namespace loratune::data
