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
                                   const char* name, const std::string& description) {
  throw Error(std::string(library) + " call " + call + " failed at " + file + ":" + std::to_string(line) + ": " +
              name + " (" + description + ")");
}
// cuBLAS's own cublasGetStatusName lives in libcublas, which the backend does not link (cuBLASLt only).
inline const char* cublas_status_name(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
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
      ::koff::cuda::fail_call("cuBLASLt", #call, __FILE__, __LINE__, ::koff::cuda::cublas_status_name(koff_st_), \
                              "status " + std::to_string(int(koff_st_)));                                \
  } while (0)
