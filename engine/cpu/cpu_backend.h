// The CPU backend: the reference implementation of koff::Backend (engine/ops/backend.h) over the
// kernels of engine/cpu. It is the built-in entry of the backend registry, so it exists before any
// static initialiser could ask for it.
#pragma once

#include "engine/ops/backend.h"

namespace koff {

Backend& cpu_backend();

}  // namespace koff
