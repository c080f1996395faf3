// Encode throughput of koff::Tokenizer, to set beside bench_hf.py (same text, same threads).
//   bench_tokenizer --tokenizer FILE --corpus CORPUS.jsonl [--threads N] [--mode batch|single] [--repeat R]
// batch:  encode_batch over the documents (each document on one thread, documents spread out);
// single: the documents joined into one text, encoded by one encode() call (split across threads).
// Prints one line: "koff <mode> threads=N: X MB/s (Y MB, Z ids, best of R)". The first pass is a
// warm-up (it fills the piece caches), as for the HF side.
#include <fmt/core.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

int main(int argc, char** argv) {
  std::string tokenizer, corpus, mode = "batch";
  int threads = 1, repeat = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string key = argv[i], value = argv[i + 1];
    if (key == "--tokenizer")
      tokenizer = value;
    else if (key == "--corpus")
      corpus = value;
    else if (key == "--threads")
      threads = std::stoi(value);
    else if (key == "--mode")
      mode = value;
    else if (key == "--repeat")
      repeat = std::stoi(value);
    else {
      fmt::print(stderr, "bench_tokenizer: unknown option {}\n", key);
      return 2;
    }
  }
  if (tokenizer.empty() || corpus.empty() || (mode != "batch" && mode != "single")) {
    fmt::print(stderr,
               "usage: bench_tokenizer --tokenizer FILE --corpus CORPUS.jsonl [--threads N] "
               "[--mode batch|single] [--repeat R]\n");
    return 2;
  }
  try {
    koff::Tokenizer tok = koff::Tokenizer::from_file(tokenizer);
    tok.set_num_threads(threads);
    std::vector<std::string> docs;
    std::ifstream in(corpus);
    for (std::string line; std::getline(in, line);)
      if (!line.empty()) docs.push_back(nlohmann::json::parse(line).get<std::string>());
    std::string joined;
    for (const auto& d : docs) joined += d + "\n";
    size_t bytes = mode == "batch" ? joined.size() - docs.size() : joined.size();

    double best = 1e30;
    size_t n_ids = 0;
    for (int r = 0; r <= repeat; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      n_ids = 0;
      if (mode == "batch") {
        for (const auto& ids : tok.encode_batch(docs)) n_ids += ids.size();
      } else {
        n_ids = tok.encode(joined).size();
      }
      double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (r > 0) best = std::min(best, s);  // r == 0 is the warm-up
    }
    fmt::print("koff {} threads={}: {:.2f} MB/s ({:.2f} MB, {} ids, best of {})\n", mode, threads, bytes / best / 1e6,
               bytes / 1e6, n_ids, repeat);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_tokenizer: {}\n", e.what());
    return 2;
  }
  return 0;
}
