// libFuzzer target for the tokenizer.
//
// Input whose first byte is '{' is loaded as a tokenizer.json: it must load or fail with
// loratune::Error, never crash. Any other input is text to encode with a byte-level tokenizer
// (ours, with a few merges; or the folder named by LORATUNE_FUZZ_TOKENIZER, e.g. Qwen2's), and
// must satisfy: decode(encode(x)) == NFC(x with invalid UTF-8 replaced), ids are valid, and the
// streaming decoder gives the same text as decode().
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "core/error.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

using loratune::tokenizer::Tokenizer;

namespace {

std::unique_ptr<Tokenizer> g_tokenizer;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz_tokenizer: invariant broken: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* dir = std::getenv("LORATUNE_FUZZ_TOKENIZER")) {
    g_tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(dir));
    return 0;
  }
  std::string tmpl = (std::filesystem::temp_directory_path() / "fuzz-tok-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) std::abort();
  loratune::tokenizer::write_byte_level_tokenizer(
      tmpl, {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {" ", "t"}, {"\xE4", "\xB8"}, {"\n", "\n"}});
  g_tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(tmpl));
  std::filesystem::remove_all(tmpl);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  if (!input.empty() && input[0] == '{') {
    try {
      Tokenizer tok = Tokenizer::from_json(input, "fuzz.json");
      std::vector<int32_t> ids = tok.encode("Hello, world! 你好 <|im_end|>\n  x");
      for (int32_t id : ids) check(tok.is_valid(id), "loaded tokenizer produced an invalid id");
      tok.decode(ids);
    } catch (const loratune::Error&) {
    }
    return 0;
  }
  const Tokenizer& tok = *g_tokenizer;
  loratune::tokenizer::EncodeOptions options;
  options.split_special = size > 0 && (data[size - 1] & 1);
  std::vector<int32_t> ids = tok.encode(input, options);
  for (int32_t id : ids) check(tok.is_valid(id), "encode produced an invalid id");
  std::string text = tok.decode(ids);
  check(text == loratune::tokenizer::nfc(loratune::tokenizer::utf8_lossy(input)),
        "decode(encode(x)) != NFC(x)");
  loratune::tokenizer::StreamDecoder stream(tok);
  std::string streamed;
  for (int32_t id : ids) {
    std::string part = stream.push(id);
    check(loratune::tokenizer::is_valid_utf8(part), "streamed text is not valid UTF-8");
    streamed += part;
  }
  streamed += stream.finish();
  check(streamed == text, "streaming decode differs from decode");
  return 0;
}
