// Encode throughput of the tokenizer on one thread.
//
//   bench_tokenizer MODEL_DIR ALPACA_JSON [ITERATIONS]
//
// Every record of the alpaca file becomes one text in the seed template; the whole set is
// encoded ITERATIONS times (default 20). Prints the first pass (cold word cache) and the mean of
// the others, in MB/s of UTF-8 input, and a checksum of the ids so that runs of other
// implementations can be checked for doing the same work (bench/tokenizer_vs_hf.sh).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "data/template.h"
#include "tokenizer/tokenizer.h"

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL_DIR ALPACA_JSON [ITERATIONS]\n", argv[0]);
    return 2;
  }
  const int iterations = argc > 3 ? std::max(2, std::atoi(argv[3])) : 20;
  try {
    auto t0 = std::chrono::steady_clock::now();
    loratune::tokenizer::Tokenizer tok = loratune::tokenizer::Tokenizer::load(argv[1]);
    const double load_s = seconds_since(t0);

    std::ifstream in(argv[2], std::ios::binary);
    if (!in) throw std::runtime_error(std::string("cannot open ") + argv[2]);
    std::stringstream ss;
    ss << in.rdbuf();
    nlohmann::json records = nlohmann::json::parse(ss.str());
    std::vector<std::string> texts;
    size_t bytes = 0;
    for (const nlohmann::json& r : records) {
      loratune::data::PromptParts p = loratune::data::apply_template(
          loratune::data::TemplateKind::kSeed,
          {r.value("instruction", ""), r.value("input", ""), r.value("output", ""), ""});
      texts.push_back(p.prompt + p.completion);
      bytes += texts.back().size();
    }

    std::vector<int32_t> ids;
    uint64_t checksum = 0, tokens = 0;
    double first_s = 0, rest_s = 0;
    for (int it = 0; it < iterations; ++it) {
      auto t = std::chrono::steady_clock::now();
      uint64_t sum = 0, count = 0;
      for (const std::string& text : texts) {
        ids.clear();
        tok.encode_into(text, ids);
        for (int32_t id : ids) sum += static_cast<uint64_t>(id);
        count += ids.size();
      }
      double s = seconds_since(t);
      (it == 0 ? first_s : rest_s) += s;
      checksum = sum;
      tokens = count;
    }
    const double mb = static_cast<double>(bytes) / 1e6;
    const double warm_mbs = mb * (iterations - 1) / rest_s;
    std::printf("loratune tokenizer: %zu texts, %.2f MB, %llu tokens, id checksum %llu\n",
                texts.size(), mb, static_cast<unsigned long long>(tokens),
                static_cast<unsigned long long>(checksum));
    std::printf("  load %.3f s; first pass %.2f MB/s; warm %.2f MB/s (%d passes, 1 thread)\n",
                load_s, mb / first_s, warm_mbs, iterations - 1);
    std::printf("RESULT loratune %.3f %.3f %llu\n", warm_mbs, mb / first_s,
                static_cast<unsigned long long>(checksum));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_tokenizer: %s\n", e.what());
    return 1;
  }
  return 0;
}
