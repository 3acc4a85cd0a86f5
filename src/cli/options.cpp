#include "cli/options.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace loratune::cli {

namespace {

const Option* find_option(const CommandSpec& spec, const std::string& name) {
  for (const Option& o : spec.options)
    if (o.name == name) return &o;
  return nullptr;
}

long long to_integer(const std::string& text, const std::string& what) {
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || errno != 0)
    throw UsageError("'" + text + "' is not an integer", what, "write a whole number such as 42");
  return v;
}

}  // namespace

std::string ParsedArgs::str(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::string ParsedArgs::required(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) throw UsageError("missing required option " + name, "", "see --help");
  return it->second.back();
}

long long ParsedArgs::integer(const std::string& name, long long fallback) const {
  return has(name) ? to_integer(str(name), name) : fallback;
}

double ParsedArgs::number(const std::string& name, double fallback) const {
  if (!has(name)) return fallback;
  std::string text = str(name);
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(text.c_str(), &end);
  if (text.empty() || *end != '\0' || errno != 0)
    throw UsageError("'" + text + "' is not a number", name, "write a number such as 0.5");
  return v;
}

std::vector<std::string> ParsedArgs::all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

ParsedArgs parse_args(const CommandSpec& spec, const std::vector<std::string>& args) {
  ParsedArgs parsed;
  for (size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help_text(spec).c_str(), stdout);
      throw HelpShown{};
    }
    std::string value;
    bool inline_value = false;
    if (size_t eq = arg.find('='); arg.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
      inline_value = true;
    }
    const Option* opt = find_option(spec, arg);
    if (!opt)
      throw UsageError("unknown option '" + arg + "'", "loratune " + spec.name,
                       "run 'loratune " + spec.name + " --help' for the options");
    if (opt->value.empty()) {
      if (inline_value) throw UsageError("option " + arg + " takes no value", spec.name);
      value = "1";
    } else if (!inline_value && opt->value.front() == '[') {
      // An optional value ("--bf16" alone means true): taken only when the next argument is
      // not an option.
      const bool next_is_value = i + 1 < args.size() && args[i + 1].rfind("--", 0) != 0;
      value = next_is_value ? args[++i] : "true";
    } else if (!inline_value) {
      if (i + 1 >= args.size())
        throw UsageError("option " + arg + " needs a value " + opt->value, spec.name);
      value = args[++i];
    }
    auto& slot = parsed.values_[arg];
    if (!slot.empty() && !opt->repeatable)
      throw UsageError("option " + arg + " given more than once", spec.name);
    slot.push_back(value);
  }
  return parsed;
}

ParsedArgs parse_args_with_config(const CommandSpec& spec, const std::vector<std::string>& args) {
  ParsedArgs parsed = parse_args(spec, args);
  if (!parsed.has("--config")) return parsed;
  const std::string path = parsed.str("--config");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw UsageError("cannot read the config file", path);
  } catch (const YAML::Exception& e) {
    throw UsageError("invalid YAML/JSON: " + std::string(e.what()), path);
  }
  if (!root.IsMap()) throw UsageError("the config file must hold a mapping of option: value", path);
  for (const auto& entry : root) {
    std::string key = entry.first.Scalar();
    std::replace(key.begin(), key.end(), '_', '-');
    while (!key.empty() && key[0] == '-') key.erase(0, 1);
    const std::string name = "--" + key;
    const Option* opt = find_option(spec, name);
    if (!opt || name == "--config")
      throw UsageError("unknown key '" + entry.first.Scalar() + "'", path,
                       "keys are the options of 'loratune " + spec.name + " --help'");
    if (parsed.has(name)) continue;  // the command line wins
    const YAML::Node& value = entry.second;
    std::vector<std::string> values;
    if (value.IsSequence()) {
      std::string joined;
      for (const auto& v : value) {
        if (!v.IsScalar())
          throw UsageError("list items must be plain values", path + ", key " + key);
        if (opt->repeatable)
          values.push_back(v.Scalar());
        else
          joined += (joined.empty() ? "" : ",") + v.Scalar();
      }
      if (!opt->repeatable) values.push_back(joined);
    } else if (value.IsScalar()) {
      values.push_back(value.Scalar());
    } else if (!value.IsNull()) {
      throw UsageError("value must be a plain value or a list", path + ", key " + key);
    }
    if (opt->value.empty()) {  // a flag: true / false
      if (values.size() != 1 || (values[0] != "true" && values[0] != "false"))
        throw UsageError("flag '" + key + "' must be true or false", path);
      if (values[0] == "true") parsed.values_[name] = {"1"};
      continue;
    }
    if (!values.empty()) parsed.values_[name] = values;
  }
  return parsed;
}

std::string help_text(const CommandSpec& spec) {
  std::string text =
      "usage: loratune " + spec.name + " " + spec.usage + "\n\n" + spec.summary + "\n\noptions:\n";
  for (const Option& o : spec.options) {
    if (o.hidden) continue;
    std::string left = "  " + o.name + (o.value.empty() ? "" : " " + o.value);
    if (left.size() < 30)
      left.resize(30, ' ');
    else
      left += "\n" + std::string(30, ' ');
    text += left + o.help;
    if (!o.default_value.empty()) text += " (default: " + o.default_value + ")";
    text += "\n";
  }
  text += std::string("  -h, --help") + std::string(20, ' ') + "show this help\n";
  return text;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    while (!item.empty() && item.front() == ' ') item.erase(item.begin());
    while (!item.empty() && item.back() == ' ') item.pop_back();
    items.push_back(item);
    start = comma + 1;
  }
  return items;
}

std::vector<long long> parse_int_list(const std::string& text, const std::string& what) {
  std::vector<long long> out;
  for (const std::string& item : split_list(text)) out.push_back(to_integer(item, what));
  return out;
}

}  // namespace loratune::cli
