#include "ops/device.h"

#include <cstdio>

#include "core/error.h"
#ifdef LORATUNE_HAVE_CUDA
#include "ops/cuda/cuda_probe.h"
#endif

namespace loratune::ops {

const CudaProbe& probe_cuda() {
#ifdef LORATUNE_HAVE_CUDA
  static const CudaProbe probe = cuda::probe();
#else
  static const CudaProbe probe{false,
                               {},
                               "this build has no CUDA backend (nvcc was not found "
                               "when it was configured)"};
#endif
  return probe;
}

std::string describe_cuda(const CudaProbe& probe) {
  if (!probe.built) return "cuda: not built";
  if (probe.devices.empty()) return "cuda: no device (" + probe.status + ")";
  std::string s = "cuda: " + std::to_string(probe.devices.size()) +
                  (probe.devices.size() == 1 ? " device: " : " devices: ");
  for (size_t i = 0; i < probe.devices.size(); ++i) {
    const GpuInfo& g = probe.devices[i];
    char memory[32];
    std::snprintf(memory, sizeof memory, "%.1f GiB",
                  static_cast<double>(g.memory_bytes) / (1 << 30));
    s += (i ? "; " : "") + g.name + " (" + memory + ", sm_" + std::to_string(g.compute_major) +
         std::to_string(g.compute_minor) + ")";
  }
  return s;
}

DeviceChoice choose_device(const std::string& request, const CudaProbe& probe) {
  if (request != "auto" && request != "cpu" && request != "cuda")
    throw UsageError("--device takes auto, cpu or cuda, not '" + request + "'");
  if (request == "cpu") return {Device::kCpu, "asked for"};
  // The CUDA build finds GPUs but computes nothing on them yet.
  const std::string lacking = !probe.built ? probe.status
                              : probe.devices.empty()
                                  ? probe.status
                                  : "found " + probe.devices[0].name +
                                        ", but this version has no CUDA kernels for the model yet";
  if (request == "cuda") throw Error("--device cuda: " + lacking, "", "use --device cpu, or auto");
  return {Device::kCpu, "auto: " + lacking};
}

}  // namespace loratune::ops
