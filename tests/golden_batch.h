// The batch of a reference golden file: sequences ids.0, ids.1, … with labels.i, packed.
#pragma once

#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/transformer.h"
#include "test_util.h"

namespace loratune::test {

struct GoldenBatch {
  std::vector<int> tokens, labels;
  std::vector<SequenceSpan> seqs;
};

inline GoldenBatch read_golden_batch(const SafetensorsFile& g) {
  GoldenBatch b;
  for (int i = 0; g.find("ids." + std::to_string(i)); ++i) {
    std::vector<int> ids = read_i32(*g.find("ids." + std::to_string(i)));
    std::vector<int> labels = read_i32(*g.find("labels." + std::to_string(i)));
    b.seqs.push_back({static_cast<int>(b.tokens.size()), static_cast<int>(ids.size()), 0});
    b.tokens.insert(b.tokens.end(), ids.begin(), ids.end());
    b.labels.insert(b.labels.end(), labels.begin(), labels.end());
  }
  return b;
}

}  // namespace loratune::test
