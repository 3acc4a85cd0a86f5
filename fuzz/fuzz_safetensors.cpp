// libFuzzer target: the safetensors header parser must reject any malformed image with an
// Error and never read outside the buffer.
#include <cstddef>
#include <cstdint>

#include "core/error.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    loratune::SafetensorsHeader h = loratune::parse_safetensors(data, size, "fuzz");
    // Touch every accepted tensor's bytes: they must lie inside the buffer.
    uint8_t sum = 0;
    for (const auto& [name, t] : h.tensors)
      for (size_t i = 0; i < t.nbytes; ++i) sum ^= t.data[i];
    volatile uint8_t sink = sum;  // the reads cannot be optimised away
    (void)sink;
  } catch (const loratune::Error&) {
  }
  return 0;
}
