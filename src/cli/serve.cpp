// loratune serve: the OpenAI API (completions, chat completions, models) over HTTP for a base
// model and any number of LoRA adapters, with continuous batching.
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <thread>

#include "cli/commands.h"
#include "cli/device_option.h"
#include "cli/options.h"
#include "cli/precision_option.h"
#include "core/error.h"
#include "core/stop_signals.h"
#include "core/threads.h"
#include "data/template.h"
#include "lora/adapter.h"
#include "model/transformer.h"
#include "serve/engine.h"
#include "serve/http_server.h"
#include "serve/openai_api.h"
#include "tokenizer/tokenizer.h"

namespace loratune::cli {

namespace {

const CommandSpec kSpec = {
    "serve",
    "--model DIR [--adapter NAME=DIR ...] [--host H] [--port P] [options]",
    "Serves the OpenAI API: GET /v1/models, POST /v1/completions and /v1/chat/completions\n"
    "(with \"stream\": true as server-sent events), GET /health. The request's \"model\" picks\n"
    "the base model (--model-name) or an adapter; requests for different adapters share each\n"
    "decode step, and new requests join the running batch between steps. Chats use the\n"
    "adapter's training template (prompt_template.json in its folder), else --template, else\n"
    "the model's chat template (ChatML for Qwen2). SIGTERM or Ctrl-C ends running requests and\n"
    "exits 0.",
    {
        {"--model", "DIR", "Hugging Face model folder (or a GGUF file)"},
        {"--model-name", "NAME", "the base model's name in the API", "the folder's name"},
        {"--adapter", "NAME=DIR", "a PEFT LoRA adapter served as model NAME (DIR alone: its name)",
         "", true},
        {"--template", "NAME",
         "chat template of adapters without prompt_template.json: seed, "
         "alpaca, chatml or llama3",
         "the model's"},
        {"--host", "HOST", "address to listen on", "127.0.0.1"},
        {"--port", "PORT", "port (0: any free one, printed at start)", "8000"},
        {"--max-batch", "N", "sequences decoded together (KV-cache slots)", "4"},
        {"--max-queue", "N", "requests waiting for a slot; beyond them the server answers 503",
         "64"},
        {"--ctx", "N", "positions per sequence (prompt and output)",
         "2048 or max_position_embeddings"},
        {"--api-key", "KEY", "require Authorization: Bearer KEY on /v1/ routes"},
        {"--threads", "N", "threads", "all cores"},
        bf16_option("auto"),
        device_option(),
    }};

std::string folder_name(const std::string& path) {
  std::filesystem::path p(path);
  while (!p.empty() && p.filename().empty()) p = p.parent_path();
  return p.stem().string();
}

}  // namespace

int run_serve(const Args& args) {
  ParsedArgs a = parse_args(kSpec, args);
  const std::string model_dir = a.required("--model");
  set_num_threads(static_cast<int>(a.integer("--threads", 0)));
  select_device(a);
  select_precision(a, "auto", ops::KernelUse::kRowInvariant);  // batches must not change answers
  announce_backend();
  Transformer model(model_dir);
  const ModelConfig& config = model.config();
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::load(model_dir);

  const std::optional<data::TemplateKind> model_template = data::model_chat_template(model_dir);
  const std::optional<data::TemplateKind> option_template =
      a.has("--template") ? std::optional(data::parse_template_kind(a.str("--template")))
                          : std::nullopt;
  std::vector<serve::ServedModel> models;
  models.push_back({a.str("--model-name", folder_name(model_dir)), nullptr,
                    option_template.value_or(model_template.value_or(data::TemplateKind::kSeed))});
  std::vector<std::unique_ptr<LoraAdapter>> adapters;
  for (const std::string& spec : a.all("--adapter")) {
    const size_t eq = spec.find('=');
    const std::string dir = eq == std::string::npos ? spec : spec.substr(eq + 1);
    const std::string name = eq == std::string::npos ? folder_name(dir) : spec.substr(0, eq);
    if (name.empty() || dir.empty()) throw UsageError("--adapter takes NAME=DIR", spec);
    for (const serve::ServedModel& m : models)
      if (m.name == name)
        throw UsageError("two models named '" + name + "'", spec, "give each adapter a NAME=");
    adapters.push_back(std::make_unique<LoraAdapter>(LoraAdapter::load(dir, config)));
    models.push_back({name, adapters.back().get(),
                      data::read_adapter_template(dir).value_or(models[0].chat_template)});
  }

  const int max_pos = config.max_position_embeddings > 0 ? config.max_position_embeddings : 2048;
  const long long ctx = a.integer("--ctx", std::min(2048, max_pos));
  if (ctx < 2 || ctx > max_pos)
    throw UsageError("--ctx must be in [2, " + std::to_string(max_pos) +
                     "] (max_position_embeddings)");
  const long long slots = a.integer("--max-batch", 4);
  const long long queue = a.integer("--max-queue", 64);
  if (slots < 1 || slots > 1024) throw UsageError("--max-batch must be in [1, 1024]");
  if (queue < 0 || queue > 100000) throw UsageError("--max-queue must be in [0, 100000]");
  const long long port = a.integer("--port", 8000);
  if (port < 0 || port > 65535) throw UsageError("--port must be in [0, 65535]");

  std::vector<int> eos = config.generation.eos_token_ids;
  for (int32_t id : tok.stop_ids()) eos.push_back(id);
  serve::Engine engine(model, tok, static_cast<int>(slots), static_cast<int>(ctx),
                       static_cast<int>(queue));
  const serve::ApiContext api{tok, config.generation, eos, models, static_cast<int>(ctx)};
  serve::ServerOptions options;
  options.host = a.str("--host", "127.0.0.1");
  options.port = static_cast<int>(port);
  options.api_key = a.str("--api-key");
  // A thread per running and per queued request, and some for the other routes.
  options.http_threads = static_cast<int>(slots + queue + 8);
  serve::HttpServer server(engine, api, options);
  const int bound = server.bind();
  std::string names;
  for (const serve::ServedModel& m : models) names += (names.empty() ? "" : ", ") + m.name;
  std::fprintf(stderr,
               "loratune serve: listening on http://%s:%d (models: %s; %lld slots of %lld "
               "positions)\n",
               options.host.c_str(), bound, names.c_str(), slots, ctx);
  std::fflush(stderr);
  StopSignalListener stop([&](int) { server.shutdown(); });
  // The requests run on this thread, which loaded the model (serve/engine.h says why); the
  // server on another, which ends the engine if it stops listening on its own.
  std::exception_ptr failure;  // the server's, reported from this thread
  std::thread http([&] {
    try {
      server.run();
    } catch (...) {
      failure = std::current_exception();
    }
    engine.shutdown();
  });
  engine.run();
  http.join();
  if (failure) std::rethrow_exception(failure);
  std::fprintf(stderr, "loratune serve: stopped\n");
  return 0;
}

}  // namespace loratune::cli
