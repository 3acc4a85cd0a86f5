// loratune: LoRA fine-tuning for Qwen2-family models, as one native program.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/stop_signals.h"
#include "dist/world.h"

namespace {

struct Command {
  const char* name;
  const char* summary;
  int (*run)(const loratune::cli::Args&);
};

const Command kCommands[] = {
    {"train", "fine-tune a LoRA adapter (the seed recipe and HF Trainer options)",
     loratune::cli::run_train},
    {"eval", "eval loss and perplexity of a model (and adapter) on a dataset",
     loratune::cli::run_eval},
    {"merge", "write a full model folder with the adapter merged in (W + s·B·A)",
     loratune::cli::run_merge},
    {"export-gguf",
     "write the model (optionally merged) or the adapter alone as GGUF for llama.cpp",
     loratune::cli::run_export_gguf},
    {"init-model", "write a Hugging Face Qwen2 folder with deterministic random weights",
     loratune::cli::run_init_model},
    {"generate", "generate text with a model (and optionally a LoRA adapter)",
     loratune::cli::run_generate},
    {"debug", "tools for comparing loratune with other implementations (logits, ...)",
     loratune::cli::run_debug},
    {"tokenize", "encode text to token ids (or decode ids) with a model's tokenizer",
     loratune::cli::run_tokenize},
    {"serve", "serve the OpenAI API (completions, chat) for a model and its LoRA adapters",
     loratune::cli::run_serve},
    {"bench", "performance figures: sgemm, bandwidth, training, the seed job, generation",
     loratune::cli::run_bench},
};

void print_usage(FILE* out) {
  std::fputs("usage: loratune <command> [options]\n\ncommands:\n", out);
  for (const Command& c : kCommands) std::fprintf(out, "  %-14s %s\n", c.name, c.summary);
  std::fputs("\nrun 'loratune <command> --help' for the options of a command\n", out);
}

// Reports an error and returns its exit status. Under mpirun the message names the rank, and
// the whole job ends: the other ranks would wait for this one in their next collective.
int fail(const char* command, const char* what, int status) {
  const loratune::dist::World& w = loratune::dist::world();
  if (w.size == 1) {
    std::fprintf(stderr, "loratune %s: error: %s\n", command, what);
    return status;
  }
  std::fprintf(stderr, "loratune %s: error on rank %d of %d: %s\n", command, w.rank, w.size, what);
  std::fflush(stderr);
  loratune::dist::abort_job(status);
}

}  // namespace

int main(int argc, char** argv) {
  loratune::take_stop_signals();
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    print_usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  loratune::cli::Args args(argv + 2, argv + argc);
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.name) != 0) continue;
    try {
      loratune::cpu_features();  // a bad LORATUNE_MAX_ISA stops the run here, before any work
      return c.run(args);
    } catch (const loratune::cli::HelpShown&) {
      return 0;
    } catch (const loratune::UsageError& e) {
      return fail(c.name, e.what(), 2);
    } catch (const std::exception& e) {
      return fail(c.name, e.what(), 1);
    }
  }
  std::fprintf(stderr,
               "loratune: error: unknown command '%s'; run 'loratune --help' for the list\n",
               argv[1]);
  return 2;
}
