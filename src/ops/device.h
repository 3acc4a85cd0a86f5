// Where a run computes, chosen once per run: the CPU (ops/cpu) or a CUDA GPU (ops/cuda).
// This version's kernels, weights and activations all live on the CPU; the CUDA build so far
// finds the GPUs and checks that its device code runs on them, so `auto` stays on the CPU and
// `cuda` is refused with the reason (what the build, the driver or the backend lacks).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace loratune::ops {

enum class Device { kCpu, kCuda };

struct GpuInfo {
  std::string name;  // "NVIDIA H200"
  size_t memory_bytes = 0;
  int compute_major = 0, compute_minor = 0;
};

// What CUDA offers to this process.
struct CudaProbe {
  bool built = false;            // this build has the CUDA backend (LORATUNE_CUDA)
  std::vector<GpuInfo> devices;  // the visible GPUs
  std::string status;            // why there are none (the runtime's error), else empty
};

// Asks the CUDA runtime (once; later calls return the first answer).
const CudaProbe& probe_cuda();

struct DeviceChoice {
  Device device = Device::kCpu;
  std::string reason;  // one line: why this device
};

// Resolves --device: "cpu", "cuda" (throws Error where it cannot run: no CUDA in the build, no
// GPU visible, or no CUDA compute backend), or "auto" (CUDA where it can run, as the seed's
// `"cuda" if torch.cuda.is_available() else "cpu"`). Throws UsageError for other values.
DeviceChoice choose_device(const std::string& request, const CudaProbe& probe);

// "cuda: not built" / "cuda: no device (cudaErrorNoDevice: …)" / "cuda: 1 device: NVIDIA H200
// (139.8 GiB, sm_90)".
std::string describe_cuda(const CudaProbe& probe);

}  // namespace loratune::ops
