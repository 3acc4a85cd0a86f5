#include "cli/device_option.h"

namespace loratune::cli {

namespace {

ops::DeviceChoice& chosen() {
  static ops::DeviceChoice choice{ops::Device::kCpu, "the default"};
  return choice;
}

}  // namespace

Option device_option() {
  return {"--device", "auto|cpu|cuda",
          "where the model computes (auto: a CUDA GPU where one is visible and this version "
          "runs on it, else the CPU)",
          "auto"};
}

ops::DeviceChoice select_device(const ParsedArgs& a) {
  chosen() = ops::choose_device(a.str("--device", "auto"), ops::probe_cuda());
  return chosen();
}

std::string describe_device() {
  const ops::DeviceChoice& c = chosen();
  return std::string(c.device == ops::Device::kCuda ? "cuda" : "cpu") + " (" + c.reason + ")";
}

}  // namespace loratune::cli
