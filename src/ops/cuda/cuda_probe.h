// The CUDA runtime as the device choice sees it (built with LORATUNE_CUDA only).
#pragma once

#include <string>

#include "ops/device.h"

namespace loratune::ops::cuda {

// The visible GPUs, or the runtime's reason for none.
CudaProbe probe();

// Runs a kernel of this build on GPU `device` and reads its answer back: empty when it ran,
// else the error (a GPU whose architecture the build has no code for says so here).
std::string run_check_kernel(int device);

}  // namespace loratune::ops::cuda
