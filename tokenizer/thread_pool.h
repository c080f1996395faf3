// A process-wide pool of worker threads for the tokenizer's parallel encoding.
//
// Why a pool rather than a std::thread per call: the BPE piece cache is per thread (bpe.cpp), so
// short-lived threads would start every call with a cold cache. Pool threads live as long as the
// process, and their caches stay warm across calls.
#pragma once

#include <functional>

namespace koff {

// Runs fn(0) ... fn(workers - 1) in parallel (the calling thread runs fn(0)) and returns when all
// have finished. Calls from inside a pool task, or concurrent calls, are safe: they run their
// extra workers on the calling thread instead of waiting for busy pool threads.
void parallel_for_workers(int workers, const std::function<void(int)>& fn);

}  // namespace koff
