// A byte-level tokenizer of our own, for models built without a Hugging Face tokenizer. It is
// written as an ordinary tokenizer.json, so it is read and applied by the same code as Qwen2's.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"

namespace loratune::tokenizer {

using nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

void write_text_atomic(const fs::path& path, const std::string& text) {
  fs::path tmp = path;
  tmp += ".tmp" + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot create file", tmp.string(), "check that the folder is writable");
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(fileno(f)) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  std::error_code ec;
  if (ok) fs::rename(tmp, path, ec);
  if (!ok || ec) {
    fs::remove(tmp, ec);
    throw Error("cannot write file", path.string(), "is the disk full?");
  }
}

ordered_json added_token(int id, const char* content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

}  // namespace

void write_byte_level_tokenizer(const std::string& dir,
                                const std::vector<std::pair<std::string, std::string>>& merges) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) throw Error("no such folder", dir);

  ordered_json vocab = ordered_json::object();
  std::map<std::string, int> known;  // raw bytes -> id
  for (int b = 0; b < 256; ++b) {
    std::string raw(1, static_cast<char>(b));
    vocab[byte_level_string(raw)] = b;
    known[raw] = b;
  }
  ordered_json merge_list = ordered_json::array();
  int next_id = 256;
  for (size_t i = 0; i < merges.size(); ++i) {
    const auto& [left, right] = merges[i];
    if (!known.count(left) || !known.count(right))
      throw Error("merge " + std::to_string(i) + " joins a token that no earlier merge made",
                  "write_byte_level_tokenizer");
    std::string joined = left + right;
    merge_list.push_back({byte_level_string(left), byte_level_string(right)});
    if (known.count(joined)) continue;  // the same token reached by another pair
    known[joined] = next_id;
    vocab[byte_level_string(joined)] = next_id++;
  }
  const char* specials[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  ordered_json added = ordered_json::array();
  for (const char* s : specials) added.push_back(added_token(next_id++, s));

  ordered_json byte_level = {{"type", "ByteLevel"},
                             {"add_prefix_space", false},
                             {"trim_offsets", false},
                             {"use_regex", false}};
  ordered_json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", {{"type", "NFC"}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", std::string(split_pattern_regex(SplitPattern::kQwen2))}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          byte_level}}}},
      {"post_processor", byte_level},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", ""},
        {"end_of_word_suffix", ""},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", false},
        {"vocab", vocab},
        {"merges", merge_list}}}};

  ordered_json decoder = ordered_json::object();
  for (const ordered_json& t : added) {
    ordered_json entry = t;
    entry.erase("id");
    decoder[std::to_string(t["id"].get<int>())] = entry;
  }
  ordered_json config = {{"add_prefix_space", false},
                         {"added_tokens_decoder", decoder},
                         {"additional_special_tokens", {"<|im_start|>", "<|im_end|>"}},
                         {"bos_token", nullptr},
                         {"clean_up_tokenization_spaces", false},
                         {"eos_token", "<|endoftext|>"},
                         {"errors", "replace"},
                         {"model_max_length", 32768},
                         {"pad_token", "<|endoftext|>"},
                         {"split_special_tokens", false},
                         {"tokenizer_class", "Qwen2Tokenizer"},
                         {"unk_token", nullptr}};

  write_text_atomic(fs::path(dir) / "tokenizer.json", root.dump(2, ' ', false) + "\n");
  write_text_atomic(fs::path(dir) / "tokenizer_config.json", config.dump(2, ' ', false) + "\n");
}

}  // namespace loratune::tokenizer
