// Table-driven command-line options: each subcommand declares its options once, and the
// same table parses the arguments and prints --help.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace loratune::cli {

struct Option {
  std::string name;           // "--max-new-tokens"
  std::string value;          // placeholder shown in help ("N"); empty for a flag; in
                              // brackets ("[true|false]") when the value may be left out
  std::string help;           // one line
  std::string default_value;  // shown in help; empty when there is none
  bool repeatable = false;    // may be given several times
  bool hidden = false;        // internal (parent and child processes): not in --help
};

struct CommandSpec {
  std::string name;     // "generate", or "debug logits"
  std::string usage;    // "--model DIR (--prompt TEXT | --prompt-ids IDS) [options]"
  std::string summary;  // one sentence
  std::vector<Option> options;
};

// Thrown after --help was printed; main() turns it into exit status 0.
struct HelpShown {};

class ParsedArgs {
 public:
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  bool flag(const std::string& name) const { return has(name); }
  std::string str(const std::string& name, const std::string& fallback = "") const;
  std::string required(const std::string& name) const;
  long long integer(const std::string& name, long long fallback) const;
  double number(const std::string& name, double fallback) const;
  std::vector<std::string> all(const std::string& name) const;

 private:
  friend ParsedArgs parse_args(const CommandSpec&, const std::vector<std::string>&);
  friend ParsedArgs parse_args_with_config(const CommandSpec&, const std::vector<std::string>&);
  std::map<std::string, std::vector<std::string>> values_;
};

// Parses `args` against `spec`; prints help and throws HelpShown on --help / -h;
// throws UsageError for unknown options, missing values or repeated options.
ParsedArgs parse_args(const CommandSpec& spec, const std::vector<std::string>& args);
std::string help_text(const CommandSpec& spec);

// parse_args, then a --config FILE (YAML or JSON) fills every option the command line left
// out. Keys are option names without the dashes, with '_' or '-' (learning_rate); lists give
// repeatable options several values and other options a comma-separated one; true/false
// switch flags. Unknown keys are usage errors naming the file.
ParsedArgs parse_args_with_config(const CommandSpec& spec, const std::vector<std::string>& args);

// "a, b,c" -> {"a", "b", "c"}: comma-separated items, spaces around each trimmed.
std::vector<std::string> split_list(const std::string& text);

// "1,2,3" -> {1, 2, 3}; `what` names the option in errors.
std::vector<long long> parse_int_list(const std::string& text, const std::string& what);

}  // namespace loratune::cli
