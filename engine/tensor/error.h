// koff::Error: the one exception type of the engine. Its message names the thing at fault (file,
// tensor, flag, both shapes of a mismatch) so that the CLI can print it as one line and exit 2.
#pragma once

#include <stdexcept>
#include <string>

namespace koff {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace koff

// The fmt-based helpers are host C++ only: nvcc's front end cannot evaluate fmt 9's consteval format
// checks, so .cu files (kernels and their launchers) build messages with std::string (cuda/check.h).
#ifndef __CUDACC__
#include <fmt/core.h>

namespace koff {

template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace koff

// KOFF_CHECK(cond, "fmt", args...): throws koff::Error with the formatted message when cond is false.
#define KOFF_CHECK(cond, ...)               \
  do {                                      \
    if (!(cond)) ::koff::fail(__VA_ARGS__); \
  } while (0)
#else
// Under nvcc (the CUDA backend's .cu files hold entries that take Tensors, whose inline accessors use
// KOFF_CHECK) the same check throws koff::Error with the format string as it is, unformatted: those
// checks only guard dtype mismatches the ops layer has already ruled out.
namespace koff::detail {
template <typename... Args>
[[noreturn]] void check_failed(const char* message, const Args&...) {
  throw Error(message);
}
}  // namespace koff::detail
#define KOFF_CHECK(cond, ...)                               \
  do {                                                      \
    if (!(cond)) ::koff::detail::check_failed(__VA_ARGS__); \
  } while (0)
#endif
