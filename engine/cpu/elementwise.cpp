// Elementwise kernels and the small reductions that go with them. All arrays contiguous, length n
// unless stated. Reductions accumulate in double (sums over a whole activation tensor are long).
//
//   binary:              out[i] = a[i] (+|-|*) b[i]                     BinaryOp add, sub, mul
//   scale:               out[i] = s * a[i]
//   axpy:                y[i] += alpha * x[i]
//   add_bias:            out[r, c] = x[r, c] + bias[c]                 x [rows, cols]
//   sum_to_last:         out[c] = sum_r x[r, c]                         x [rows, cols]
//   sum / dot:           out = sum_i a[i] (* b[i])                      one scalar
//
// Activations over contiguous arrays of length n (softmax: [rows, cols], over the last dim).
//
//   sigmoid(x) = 1 / (1 + exp(-x))       (engine/cpu/common.h)
//   silu(x) = x sigmoid(x);              silu'(x) = s (1 + x (1 - s)),  s = sigmoid(x)
//   swiglu(g, u) = silu(g) u;            dg = dy u silu'(g),  du = dy silu(g)
//   (swiglu with the neuron gate fused in is a gate op: engine/cpu/gates.cpp)
//   softmax(x)_j = exp(x_j - max x) / sum_k exp(x_k - max x)
//   softmax backward: dx_j = y_j (dy_j - sum_k dy_k y_k)

#include <cmath>

#include "engine/cpu/common.h"
#include "engine/cpu/cpu_backend.h"
#include "engine/tensor/error.h"

namespace koff::cpu {

template <typename T>
void binary(BinaryOp op, const T* a, const T* b, T* out, int64_t n) {
  switch (op) {
    case BinaryOp::add:
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
      break;
    case BinaryOp::sub:
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] - b[i];
      break;
    case BinaryOp::mul:
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
      break;
  }
}

template <typename T>
void scale(const T* a, T s, T* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) out[i] = s * a[i];
}

template <typename T>
void axpy(T* y, const T* x, T alpha, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

template <typename T>
void add_bias(const T* x, const T* bias, T* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* o = out + r * cols;
#pragma omp simd
    for (int64_t c = 0; c < cols; ++c) o[c] = xr[c] + bias[c];
  }
}

template <typename T>
void sum_to_last(const T* x, T* out, int64_t rows, int64_t cols) {
  reduce_rows(rows, cols, out, [&](int64_t r, double* acc) {
    const T* xr = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) acc[c] += xr[c];
  });
}

template <typename T>
T sum(const T* a, int64_t n) {
  return static_cast<T>(sum_chunks<double>(n, n >= kParallelMin, [&](int64_t begin, int64_t end) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = begin; i < end; ++i) s += a[i];
    return s;
  }));
}

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  return static_cast<T>(sum_chunks<double>(n, n >= kParallelMin, [&](int64_t begin, int64_t end) {
    double s = 0.0;
#pragma omp simd reduction(+ : s)
    for (int64_t i = begin; i < end; ++i) s += static_cast<double>(a[i]) * static_cast<double>(b[i]);
    return s;
  }));
}

template <typename T>
void silu(const T* x, T* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 8)
  for (int64_t i = 0; i < n; ++i) out[i] = x[i] * sigmoid(x[i]);
}

template <typename T>
void silu_backward(const T* dy, const T* x, T* dx, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 8)
  for (int64_t i = 0; i < n; ++i) {
    const T s = sigmoid(x[i]);
    dx[i] = dy[i] * s * (T(1) + x[i] * (T(1) - s));
  }
}

template <typename T>
void swiglu(const T* gate, const T* up, T* out, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 8)
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * sigmoid(gate[i]) * up[i];
}

template <typename T>
void swiglu_backward(const T* dy, const T* gate, const T* up, T* dgate, T* dup, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelMin / 8)
  for (int64_t i = 0; i < n; ++i) {
    const T g = gate[i], s = sigmoid(g);
    dup[i] = dy[i] * g * s;
    dgate[i] = dy[i] * up[i] * s * (T(1) + g * (T(1) - s));
  }
}

template <typename T>
void softmax(const T* x, T* out, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin / 8)
  for (int64_t r = 0; r < rows; ++r) {
    const T* xr = x + r * cols;
    T* o = out + r * cols;
    T mx = -INFINITY;
    for (int64_t j = 0; j < cols; ++j) mx = xr[j] > mx ? xr[j] : mx;
    // A row of all -inf (fully masked) has no distribution; zeros keep NaN out of the graph.
    if (mx == -INFINITY) {
      for (int64_t j = 0; j < cols; ++j) o[j] = T(0);
      continue;
    }
    T s = T(0);
    for (int64_t j = 0; j < cols; ++j) {
      o[j] = std::exp(xr[j] - mx);
      s += o[j];
    }
    const T inv = T(1) / s;
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) o[j] *= inv;
  }
}

template <typename T>
void softmax_backward(const T* dy, const T* y, T* dx, int64_t rows, int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const T* dyr = dy + r * cols;
    const T* yr = y + r * cols;
    T* d = dx + r * cols;
    T s = T(0);
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; ++j) s += dyr[j] * yr[j];
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) d[j] = yr[j] * (dyr[j] - s);
  }
}

// ---- the CPU backend's entries (engine/tensor/backend.h) ----

void fill_elementwise(Backend& table) {
  table.binary = [](BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out) {
    on_float(a, "binary", [&](auto tag) {
      using T = decltype(tag);
      cpu::binary<T>(op, ptr<T>(a), ptr<T>(b), mut<T>(out), a.numel());
    });
  };
  table.scale = [](const Tensor& a, double s, Tensor& out) {
    on_float(a, "scale", [&](auto tag) {
      using T = decltype(tag);
      cpu::scale<T>(ptr<T>(a), static_cast<T>(s), mut<T>(out), a.numel());
    });
  };
  table.axpy = [](Tensor& y, const Tensor& x, double alpha) {
    on_float(y, "axpy_", [&](auto tag) {
      using T = decltype(tag);
      cpu::axpy<T>(mut<T>(y), ptr<T>(x), static_cast<T>(alpha), y.numel());
    });
  };
  table.add_bias = [](const Tensor& x, const Tensor& bias, Tensor& out) {
    on_float(x, "add_bias", [&](auto tag) {
      using T = decltype(tag);
      cpu::add_bias<T>(ptr<T>(x), ptr<T>(bias), mut<T>(out), rows_of(x), bias.numel());
    });
  };
  table.sum_to_last = [](const Tensor& x, Tensor& out) {
    on_float(x, "sum_to_last", [&](auto tag) {
      using T = decltype(tag);
      cpu::sum_to_last<T>(ptr<T>(x), mut<T>(out), rows_of(x), out.numel());
    });
  };
  table.sum = [](const Tensor& x, Tensor& out) {
    on_float(x, "sum", [&](auto tag) {
      using T = decltype(tag);
      *mut<T>(out) = cpu::sum<T>(ptr<T>(x), x.numel());
    });
  };
  table.dot = [](const Tensor& a, const Tensor& b, Tensor& out) {
    on_float(a, "dot", [&](auto tag) {
      using T = decltype(tag);
      *mut<T>(out) = cpu::dot<T>(ptr<T>(a), ptr<T>(b), a.numel());
    });
  };
  table.silu = [](const Tensor& x, Tensor& out) {
    on_float(x, "silu", [&](auto tag) {
      using T = decltype(tag);
      cpu::silu<T>(ptr<T>(x), mut<T>(out), x.numel());
    });
  };
  table.silu_backward = [](const Tensor& dy, const Tensor& x, Tensor& dx) {
    on_float(x, "silu_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::silu_backward<T>(ptr<T>(dy), ptr<T>(x), mut<T>(dx), x.numel());
    });
  };
  table.swiglu = [](const Tensor& gate, const Tensor& up, Tensor& out) {
    on_float(gate, "swiglu", [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu<T>(ptr<T>(gate), ptr<T>(up), mut<T>(out), gate.numel());
    });
  };
  table.swiglu_backward = [](const Tensor& dy, const Tensor& gate, const Tensor& up, Tensor& dgate, Tensor& dup) {
    on_float(gate, "swiglu_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::swiglu_backward<T>(ptr<T>(dy), ptr<T>(gate), ptr<T>(up), mut<T>(dgate), mut<T>(dup), gate.numel());
    });
  };
  table.softmax = [](const Tensor& x, Tensor& out) {
    on_float(x, "softmax", [&](auto tag) {
      using T = decltype(tag);
      cpu::softmax<T>(ptr<T>(x), mut<T>(out), rows_of(x), x.dim() ? x.size(-1) : 1);
    });
  };
  table.softmax_backward = [](const Tensor& dy, const Tensor& y, Tensor& dx) {
    on_float(y, "softmax_backward", [&](auto tag) {
      using T = decltype(tag);
      cpu::softmax_backward<T>(ptr<T>(dy), ptr<T>(y), mut<T>(dx), rows_of(y), y.dim() ? y.size(-1) : 1);
    });
  };
}

}  // namespace koff::cpu
