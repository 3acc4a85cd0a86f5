#include "tokenizer/json_fields.h"

#include <algorithm>

#include "core/error.h"

namespace loratune::tokenizer {

using nlohmann::json;

const json* member(const json& obj, const char* key) {
  if (!obj.is_object()) return nullptr;
  auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

bool get_bool(const json& obj, const char* key, bool fallback, const std::string& where) {
  const json* v = member(obj, key);
  if (!v) return fallback;
  if (!v->is_boolean()) throw Error(std::string("'") + key + "' must be true or false", where);
  return v->get<bool>();
}

std::string get_string(const json& obj, const char* key, const std::string& where) {
  const json* v = member(obj, key);
  if (!v) return "";
  if (!v->is_string()) throw Error(std::string("'") + key + "' must be a string", where);
  return v->get<std::string>();
}

int64_t get_int(const json& obj, const char* key, int64_t fallback, const std::string& where) {
  const json* v = member(obj, key);
  if (!v) return fallback;
  if (!v->is_number_integer() || v->get<int64_t>() < 0 || v->get<int64_t>() > 1'000'000)
    throw Error(std::string("'") + key + "' must be a small non-negative integer", where);
  return v->get<int64_t>();
}

std::string type_of(const json& obj, const std::string& where) {
  if (!obj.is_object()) throw Error("expected an object with a \"type\"", where);
  return get_string(obj, "type", where);
}

int64_t get_id(const json& v, const std::string& where) {
  if (!v.is_number_integer() && !v.is_number_unsigned())
    throw Error("token id must be an integer", where);
  int64_t id = v.is_number_unsigned()
                   ? static_cast<int64_t>(std::min<uint64_t>(
                         v.get<uint64_t>(), static_cast<uint64_t>(kMaxTokenId) + 1))
                   : v.get<int64_t>();
  if (id < 0 || id > kMaxTokenId)
    throw Error("token id " + std::to_string(id) + " is out of range", where,
                "ids must lie in 0.." + std::to_string(kMaxTokenId));
  return id;
}

}  // namespace loratune::tokenizer
