#include <cuda_runtime.h>

#include "ops/cuda/cuda_probe.h"

namespace loratune::ops::cuda {

namespace {

constexpr int kAnswer = 0x10a7;

__global__ void write_answer(int* out) {
  *out = kAnswer;
}

std::string error_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + ": " + cudaGetErrorString(e);
}

}  // namespace

CudaProbe probe() {
  CudaProbe p;
  p.built = true;
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    p.status = error_text(e);
    if (e == cudaErrorInsufficientDriver)
      p.status += " (no NVIDIA driver is loaded here, or one older than this CUDA runtime)";
    cudaGetLastError();  // clear the sticky error
    return p;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    p.devices.push_back({prop.name, prop.totalGlobalMem, prop.major, prop.minor});
  }
  if (p.devices.empty()) p.status = "no CUDA device is visible";
  return p;
}

std::string run_check_kernel(int device) {
  cudaError_t e = cudaSetDevice(device);
  int* answer = nullptr;
  if (e == cudaSuccess) e = cudaMalloc(&answer, sizeof(int));
  if (e != cudaSuccess) return error_text(e);
  write_answer<<<1, 1>>>(answer);
  e = cudaGetLastError();
  int host = 0;
  if (e == cudaSuccess) e = cudaMemcpy(&host, answer, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(answer);
  if (e != cudaSuccess) return error_text(e);
  return host == kAnswer ? "" : "the check kernel wrote a wrong value";
}

}  // namespace loratune::ops::cuda
