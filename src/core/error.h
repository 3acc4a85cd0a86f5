// Typed errors with context. Every failure the user can cause becomes an Error that says
// what went wrong, where (file, line, tensor name) and, when we know one, a hint.
#pragma once

#include <stdexcept>
#include <string>

namespace loratune {

class Error : public std::runtime_error {
 public:
  Error(const std::string& what, const std::string& where = "", const std::string& hint = "")
      : std::runtime_error(format(what, where, hint)) {}

 private:
  static std::string format(const std::string& what, const std::string& where,
                            const std::string& hint) {
    std::string msg = what;
    if (!where.empty()) msg += " (" + where + ")";
    if (!hint.empty()) msg += "; hint: " + hint;
    return msg;
  }
};

// A mistake in how the program was called: the CLI exits with status 2.
class UsageError : public Error {
 public:
  using Error::Error;
};

}  // namespace loratune
