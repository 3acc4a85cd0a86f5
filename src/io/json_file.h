// Reading JSON files with errors that name the file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace loratune {

using Json = nlohmann::json;

// Parses the file; throws Error naming the file (and byte offset) on failure.
Json read_json_file(const std::string& path);
bool file_exists(const std::string& path);
bool dir_exists(const std::string& path);

}  // namespace loratune
