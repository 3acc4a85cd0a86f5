// Internal: reading fields of tokenizer.json and its config files, with errors that name the
// field and the file.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace loratune::tokenizer {

// Ids may have gaps, but a file must not make us allocate far more than it holds.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

// The member `key` of an object, or nullptr when it is absent, null, or `obj` is no object.
const nlohmann::json* member(const nlohmann::json& obj, const char* key);
bool get_bool(const nlohmann::json& obj, const char* key, bool fallback, const std::string& where);
// "" when absent.
std::string get_string(const nlohmann::json& obj, const char* key, const std::string& where);
int64_t get_int(const nlohmann::json& obj, const char* key, int64_t fallback,
                const std::string& where);
// The "type" of a component object.
std::string type_of(const nlohmann::json& obj, const std::string& where);
// A token id in 0..kMaxTokenId.
int64_t get_id(const nlohmann::json& v, const std::string& where);

}  // namespace loratune::tokenizer
