// The subcommands. Each lives in its own file under src/cli/ and takes the arguments after
// its name; it returns the process exit status and throws Error / UsageError on failure.
#pragma once

#include <string>
#include <vector>

namespace loratune::cli {

using Args = std::vector<std::string>;

int run_init_model(const Args& args);
int run_generate(const Args& args);
int run_debug(const Args& args);
int run_train(const Args& args);
int run_eval(const Args& args);
int run_merge(const Args& args);
int run_export_gguf(const Args& args);
int run_tokenize(const Args& args);
int run_bench(const Args& args);
int run_serve(const Args& args);

}  // namespace loratune::cli
