// The CPU runtime under the kernels: OpenBLAS's kernel family and OpenMP's idle threads.
//
// Two settings decide most of a CPU step's speed, and both are read ONCE, from the environment, when
// the libraries load (before main runs), so they can only be changed by starting the process again:
//
//   OPENBLAS_CORETYPE  OpenBLAS picks its GEMM kernels from a table of CPU models. A CPU newer than its
//                      table (Debian 12's 0.3.21 on an Emerald Rapids Xeon, model 207, as on the
//                      project's build machines) falls back to "Prescott", its SSE3 kernels: measured
//                      88 GFLOP/s on 2 cores at 1024^3 against 402 with the AVX-512 "Cooperlake"
//                      kernels (bench/koff_bench, OpenBlasSgemm). When the name OpenBLAS chose is weaker
//                      than what the CPU's own feature flags allow, we name the right family.
//   OMP_WAIT_POLICY    libgomp's idle threads spin for ~300k iterations before they sleep (OpenBLAS's
//                      OpenMP build shares that pool). When another process takes a core, a spinning
//                      thread burns the time slice the thread it waits for needs: the KOFF step on 2
//                      threads beside 2 busy processes fell from ~4,200 to ~210 tokens/s (20x), below
//                      one thread's ~2,050. With "passive" it ran at ~2,300-2,600 (and ~5% slower idle).
//   malloc            glibc returns freed blocks of 128 KiB+ (mmap) and the heap's free top (trim) to the
//                      OS, so every step's activations, freed at its end, page-fault back in during the
//                      next: ~69,000 minor faults a step for the embedded KOFF step (270 MB). Blocks up
//                      to 32 MiB from the heap and no trimming below 2 GiB: 90% fewer faults, the step
//                      ~15% faster (6354-6903 -> 7659-7910 tokens/s over 12 steps), peak RSS 526 -> 582
//                      MB. This one needs no restart (mallopt); the MALLOC_*_ variables carry it to
//                      children. Not when the user set MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or
//                      GLIBC_TUNABLES.
//
// OMP_DYNAMIC=true is left alone but warned about in runtime_summary(): libgomp then reads the load
// average at every parallel region (a 3-step embedded run took over 100 s, mostly system time).
//
// settle_environment() (called first thing by the koff binary and the benchmarks) sets what the user
// did not, and restarts the process once with it (execv of /proc/self/exe, same pid and arguments;
// KOFF_CPU_RUNTIME_SET marks the restarted process). Anything the user set is left alone.
#pragma once

#include <string>

namespace koff::cpu {

// Sets OPENBLAS_CORETYPE and OMP_WAIT_POLICY where needed (see above) and re-executes the process;
// returns when nothing needed changing, when this process is the restarted one, or when the restart
// failed (the reason goes to runtime_summary()). Call before anything else in main.
void settle_environment(char** argv);

// One line for logs and profiles: "OpenBLAS 0.3.21 (Cooperlake kernels; set by koff: OpenBLAS took
// this CPU for Prescott), 2 OpenMP threads, OMP_WAIT_POLICY=passive (set by koff)".
std::string runtime_summary();

}  // namespace koff::cpu
