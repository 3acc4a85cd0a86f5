// libFuzzer target: the GGUF parser must reject any malformed image with an Error and never
// read outside the buffer.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const loratune::GgufImage img = loratune::parse_gguf(data, size, "fuzz");
    // Touch every accepted tensor's bytes: they must lie inside the buffer.
    uint8_t sum = 0;
    for (const loratune::GgufTensor& t : img.tensors)
      for (size_t i = 0; i < t.nbytes; ++i) sum ^= t.data[i];
    volatile uint8_t sink = sum;  // the reads cannot be optimised away
    (void)sink;
  } catch (const loratune::Error&) {
  }
  return 0;
}
