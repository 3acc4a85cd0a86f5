#include "cli/adapter_option.h"

#include "core/error.h"

namespace loratune::cli {

std::unique_ptr<LoraAdapter> load_adapter_option(const ParsedArgs& a, Transformer& model,
                                                 bool merge) {
  if (!a.has("--adapter")) {
    if (merge) throw UsageError("--merge needs --adapter");
    return nullptr;
  }
  auto adapter =
      std::make_unique<LoraAdapter>(LoraAdapter::load(a.str("--adapter"), model.config()));
  if (merge)
    model.merge_adapter(*adapter);
  else
    model.set_adapter(adapter.get());
  return adapter;
}

}  // namespace loratune::cli
