// Corpora per domain (ARCHITECTURE.md "Data directory"): `<dir>/<domain>/train.txt` and
// `<dir>/<domain>/valid.txt`, UTF-8, paragraphs separated by blank lines. Text becomes one token
// stream per split: each paragraph encoded with the tokenizer's special tokens (BOS), then EOS.
#pragma once

#include <string>
#include <vector>

#include "engine/tensor/random.h"
#include "engine/tensor/tensor.h"
#include "tokenizer/tokenizer.h"

namespace koff::data {

struct DomainFiles {
  std::string name;
  std::string train, valid;  // paths
};

// The domains of a data directory, sorted by name. Errors (koff::Error): directory missing, no
// domain in it, a domain without train.txt or valid.txt, an empty file.
std::vector<DomainFiles> list_domains(const std::string& data_dir);

// Paragraphs of a text file (split on blank lines, trimmed, empty ones dropped). Errors: missing,
// unreadable, no paragraph at all.
std::vector<std::string> read_paragraphs(const std::string& path);

// Token stream of paragraphs: encode(p, add_special_tokens=true) followed by `eos` (if >= 0).
std::vector<int32_t> tokenize(const Tokenizer& tokenizer, const std::vector<std::string>& paragraphs, int64_t eos);

struct Batch {
  Tensor ids;      // [B, T] i64
  Tensor targets;  // [B, T] i64: the next token of each position
  int64_t tokens = 0;
};

// B random windows of T+1 tokens from a stream; window starts are a pure function of (rng, first),
// so a resumed run draws exactly the batches of an uninterrupted one.
Batch sample_batch(const std::vector<int32_t>& stream, int64_t batch, int64_t seq, const Philox& rng, uint64_t first);

// The stream cut into consecutive non-overlapping windows of seq+1 tokens (the last one shorter),
// every token predicted exactly once: for held-out perplexity. At most max_windows (0 = all).
std::vector<Batch> eval_windows(const std::vector<int32_t>& stream, int64_t seq, int64_t max_windows = 0);

}  // namespace koff::data
