#pragma once
#include "cuda_runtime.h"

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t size, size_t zfill = 0) {
  if (size != 4 && size != 8 && size != 16) emu::die("cp.async size");
  if (zfill > size) emu::die("cp.async zfill");
  if (reinterpret_cast<uintptr_t>(dst) % size) emu::die("cp.async dst misaligned");
  if (reinterpret_cast<uintptr_t>(src) % size) emu::die("cp.async src misaligned");
  emu::Copy c{dst, src, size, zfill};
  if (emu::st.copy_mode == 0)
    emu::do_copy(c);
  else
    emu::st.pipes[threadIdx.x].open.push_back(c);
}
inline void __pipeline_commit() {
  auto& p = emu::st.pipes[threadIdx.x];
  p.groups.push_back(std::move(p.open));
  p.open.clear();
}
inline void __pipeline_wait_prior(size_t n) {
  auto& p = emu::st.pipes[threadIdx.x];
  while (p.groups.size() > n) {
    for (auto& c : p.groups.front()) emu::do_copy(c);
    p.groups.erase(p.groups.begin());
  }
}
