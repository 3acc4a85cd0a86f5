// --device: the choice between the CPU and CUDA (ops/device.h), and the CUDA build's probe.
#include <gtest/gtest.h>

#include "core/error.h"
#include "ops/device.h"
#include "test_util.h"
#ifdef LORATUNE_HAVE_CUDA
#include "ops/cuda/cuda_probe.h"
#endif

namespace loratune {
namespace {

using ops::CudaProbe;
using ops::Device;
using test::CommandResult;
using test::run_cli;
using test::tiny_model_dir;

const CudaProbe kNotBuilt{false, {}, "this build has no CUDA backend"};
const CudaProbe kNoGpu{true, {}, "cudaErrorNoDevice: no CUDA-capable device is detected"};
const CudaProbe kOneGpu{true, {{"NVIDIA H200", size_t{150} << 30, 9, 0}}, ""};

std::string refusal(const std::string& request, const CudaProbe& probe) {
  try {
    ops::choose_device(request, probe);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Device, CpuIsChosenWhereCudaCannotRun) {
  for (const CudaProbe* p : {&kNotBuilt, &kNoGpu, &kOneGpu}) {
    EXPECT_EQ(ops::choose_device("cpu", *p).device, Device::kCpu);
    const ops::DeviceChoice a = ops::choose_device("auto", *p);
    EXPECT_EQ(a.device, Device::kCpu);
    EXPECT_NE(a.reason.find("auto: "), std::string::npos) << a.reason;
  }
  EXPECT_NE(ops::choose_device("auto", kNoGpu).reason.find("cudaErrorNoDevice"), std::string::npos);
}

TEST(Device, CudaIsRefusedWithTheReason) {
  EXPECT_NE(refusal("cuda", kNotBuilt).find("no CUDA backend"), std::string::npos);
  EXPECT_NE(refusal("cuda", kNoGpu).find("cudaErrorNoDevice"), std::string::npos);
  const std::string with_gpu = refusal("cuda", kOneGpu);
  EXPECT_NE(with_gpu.find("found NVIDIA H200"), std::string::npos) << with_gpu;
  EXPECT_NE(with_gpu.find("no CUDA kernels"), std::string::npos) << with_gpu;
  EXPECT_THROW(ops::choose_device("gpu", kOneGpu), UsageError);
}

TEST(Device, DescribesWhatCudaOffers) {
  EXPECT_EQ(ops::describe_cuda(kNotBuilt), "cuda: not built");
  EXPECT_EQ(ops::describe_cuda(kNoGpu),
            "cuda: no device (cudaErrorNoDevice: no CUDA-capable device is detected)");
  EXPECT_EQ(ops::describe_cuda(kOneGpu), "cuda: 1 device: NVIDIA H200 (150.0 GiB, sm_90)");
}

// The probe of this process agrees with how it was built, and the CLI follows it.
TEST(Device, CommandLineFollowsTheProbe) {
  const CudaProbe& p = ops::probe_cuda();
#ifdef LORATUNE_HAVE_CUDA
  EXPECT_TRUE(p.built);
#else
  EXPECT_FALSE(p.built);
#endif
  EXPECT_EQ(p.devices.empty(), !p.status.empty());
  const std::string model = tiny_model_dir();
  const CommandResult cuda =
      run_cli("generate --model '" + model + "' --prompt-ids 1,2 --max-new-tokens 2 --device cuda");
  EXPECT_NE(cuda.status, 0);
  EXPECT_NE(cuda.output.find("--device cuda: "), std::string::npos) << cuda.output;
  const CommandResult bad = run_cli("generate --model '" + model + "' --prompt-ids 1 --device tpu");
  EXPECT_EQ(bad.status, 2) << bad.output;
  const CommandResult cpu = run_cli("eval --help");
  EXPECT_NE(cpu.output.find("--device"), std::string::npos);
}

#ifdef LORATUNE_HAVE_CUDA
// On a machine with a GPU: this build's device code runs there (its architectures cover it).
TEST(Cuda, CheckKernelRunsOnEveryVisibleGpu) {
  const CudaProbe& p = ops::probe_cuda();
  if (p.devices.empty()) GTEST_SKIP() << "no CUDA GPU here: " << p.status;
  for (size_t i = 0; i < p.devices.size(); ++i)
    EXPECT_EQ(ops::cuda::run_check_kernel(static_cast<int>(i)), "") << p.devices[i].name;
}
#endif

}  // namespace
}  // namespace loratune
