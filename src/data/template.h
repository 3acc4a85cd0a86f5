// Prompt templates: how an instruction record becomes the text the model sees.
//
//   seed    "Instruction: {instruction}\nInput: {input}\nOutput: " + "{output}"
//           (no Input line when the input is empty); a generation prompt is
//           "Instruction: {prompt}\nOutput: ".
//   alpaca  Stanford Alpaca's "Below is an instruction that describes a task. ...\n\n"
//           "### Instruction:\n{instruction}\n\n[### Input:\n{input}\n\n]### Response:\n"
//           + "{output}"; the answer ends with the model's EOS, as for seed.
//   chatml  Qwen2-Instruct's default: "<|im_start|>system\n{system}<|im_end|>\n"
//           "<|im_start|>user\n{instruction[\n{input}]}<|im_end|>\n<|im_start|>assistant\n"
//           + "{output}"; the answer ends with <|im_end|> (the template's end token).
//   llama3  Llama 3's chat format: "<|begin_of_text|>" [+ "<|start_header_id|>system
//           <|end_header_id|>\n\n{system}<|eot_id|>" when there is a system prompt] +
//           "<|start_header_id|>user<|end_header_id|>\n\n{instruction[\n{input}]}<|eot_id|>"
//           "<|start_header_id|>assistant<|end_header_id|>\n\n" + "{output}" (each content
//           trimmed, as its chat template does); the answer ends with <|eot_id|>.
//
// The prompt and the completion are returned apart: the data pipeline tokenizes them
// separately, so the boundary is tokenized the same way in training and in generation, and
// only the completion (plus the end token) carries labels.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace loratune::data {

enum class TemplateKind { kSeed, kAlpaca, kChatML, kLlama3 };

// "seed", "alpaca", "chatml" or "llama3"; throws UsageError for anything else.
TemplateKind parse_template_kind(std::string_view name);
const char* template_name(TemplateKind kind);

inline constexpr std::string_view kDefaultSystemPrompt = "You are a helpful assistant.";

struct Example {
  std::string instruction;
  std::string input;
  std::string output;
  std::string system;  // chatml only; empty: kDefaultSystemPrompt
};

struct PromptParts {
  std::string prompt;      // everything the model is given
  std::string completion;  // what it learns to produce, without the end token
};

PromptParts apply_template(TemplateKind kind, const Example& example);

// A multi-turn conversation: the earlier (user, assistant) turns go into the prompt before the
// final example, so only the last answer is the completion.
//   seed    each turn as "Instruction: {user}\nOutput: {assistant}\n", then the usual prompt.
//   chatml  the system block once, then "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>
//           assistant\n{assistant}<|im_end|>\n" per turn (Qwen2's chat template), then the
//           final user turn and the assistant header.
//   llama3  after the system turn, a user and an assistant turn per earlier exchange.
// With no history this equals apply_template(kind, example).
PromptParts apply_template_with_history(
    TemplateKind kind, const Example& example,
    std::span<const std::pair<std::string, std::string>> history);

// The prompt for generating an answer to `prompt` (no input field).
std::string generation_prompt(TemplateKind kind, std::string_view prompt,
                              std::string_view system = {});

// The template an adapter was trained with, which the trainer writes beside the adapter files
// (prompt_template.json: {"template": "seed"}) so that serving can format chats as trained;
// nullopt when the folder has none. Throws UsageError for an unreadable or unknown one.
std::optional<TemplateKind> read_adapter_template(const std::string& adapter_dir);
void write_adapter_template(const std::string& adapter_dir, TemplateKind kind);

// The chat template a model folder declares: ChatML where tokenizer_config.json's
// chat_template uses <|im_start|> (Qwen2's, Qwen3's), llama3 where it uses
// <|start_header_id|>, else nullopt.
std::optional<TemplateKind> model_chat_template(const std::string& model_dir);

// The token that ends a completion: "<|endoftext|>" for seed and alpaca (or the tokenizer's
// eos), "<|im_end|>" for chatml, "<|eot_id|>" for llama3.
const char* template_end_token(TemplateKind kind);
// Whether the template ends answers with a token of its own (chatml, llama3) rather than the
// tokenizer's eos.
bool template_has_end_token(TemplateKind kind);

}  // namespace loratune::data
