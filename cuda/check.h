// Error checks for every CUDA runtime and cuBLASLt call: the message names the call, the file and
// line, and the library's own description of the error.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "engine/tensor/error.h"

#include <string>

namespace koff::cuda {
// Built with std::string rather than fmt: nvcc cannot evaluate fmt's consteval format checks.
[[noreturn]] inline void fail_call(const char* library, const char* call, const char* file, int line,
                                   const char* name, const char* description) {
  throw Error(std::string(library) + " call " + call + " failed at " + file + ":" + std::to_string(line) + ": " +
              name + " (" + description + ")");
}
}  // namespace koff::cuda

#define KOFF_CUDA_CHECK(call)                                                                            \
  do {                                                                                                   \
    cudaError_t koff_err_ = (call);                                                                      \
    if (koff_err_ != cudaSuccess)                                                                        \
      ::koff::cuda::fail_call("CUDA", #call, __FILE__, __LINE__, cudaGetErrorName(koff_err_),            \
                              cudaGetErrorString(koff_err_));                                            \
  } while (0)

#define KOFF_CUBLAS_CHECK(call)                                                                          \
  do {                                                                                                   \
    cublasStatus_t koff_st_ = (call);                                                                    \
    if (koff_st_ != CUBLAS_STATUS_SUCCESS)                                                               \
      ::koff::cuda::fail_call("cuBLASLt", #call, __FILE__, __LINE__, cublasGetStatusName(koff_st_),      \
                              cublasGetStatusString(koff_st_));                                          \
  } while (0)
