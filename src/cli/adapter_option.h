// The --adapter option that several commands share.
#pragma once

#include <memory>

#include "cli/options.h"
#include "lora/adapter.h"
#include "model/transformer.h"

namespace loratune::cli {

// Loads --adapter (when given) for `model` and applies it unmerged, or folds it into the
// weights when `merge`. The returned adapter must outlive the model's passes.
std::unique_ptr<LoraAdapter> load_adapter_option(const ParsedArgs& a, Transformer& model,
                                                 bool merge = false);

}  // namespace loratune::cli
