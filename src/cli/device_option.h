// --device auto|cpu|cuda: where the run computes (ops/device.h), chosen before the model loads.
#pragma once

#include <string>

#include "cli/options.h"
#include "ops/device.h"

namespace loratune::cli {

Option device_option();

// Resolves --device against what CUDA offers (throws Error where the device asked for cannot
// run) and keeps the choice for announce_backend.
ops::DeviceChoice select_device(const ParsedArgs& a);

// "cpu (auto: cuda: not built)": the choice select_device made.
std::string describe_device();

}  // namespace loratune::cli
