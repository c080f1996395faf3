#include "engine/data/corpus.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace koff::data {

namespace fs = std::filesystem;

std::vector<DomainFiles> list_domains(const std::string& data_dir) {
  KOFF_CHECK(fs::is_directory(data_dir), "data directory {} does not exist", data_dir);
  std::vector<DomainFiles> out;
  for (const auto& entry : fs::directory_iterator(data_dir)) {
    if (!entry.is_directory()) continue;
    DomainFiles d{entry.path().filename().string(), (entry.path() / "train.txt").string(),
                  (entry.path() / "valid.txt").string()};
    for (const std::string* p : {&d.train, &d.valid}) {
      KOFF_CHECK(fs::is_regular_file(*p), "domain '{}': {} is missing", d.name, *p);
      KOFF_CHECK(fs::file_size(*p) > 0, "domain '{}': {} is empty", d.name, *p);
    }
    out.push_back(std::move(d));
  }
  KOFF_CHECK(!out.empty(), "data directory {} has no domain (expected <domain>/train.txt and <domain>/valid.txt)",
             data_dir);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
  return out;
}

namespace {

// Length of the valid UTF-8 sequence starting at s[i] (RFC 3629: no overlongs, no surrogates, at
// most U+10FFFF), or 0 when it is not one.
size_t utf8_sequence(const std::string& s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return 1;
  size_t n;
  unsigned char lo = 0x80, hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) n = 2;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
  else return 0;
  if (i + n > s.size()) return 0;
  if (b(i + 1) < lo || b(i + 1) > hi) return 0;
  for (size_t k = 2; k < n; ++k)
    if (b(i + k) < 0x80 || b(i + k) > 0xBF) return 0;
  return n;
}

}  // namespace

std::vector<std::string> read_paragraphs(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  KOFF_CHECK(in.good(), "cannot open {}", path);
  std::vector<std::string> out;
  std::string line, current;
  auto flush = [&] {
    if (!current.empty()) out.push_back(std::move(current));
    current.clear();
  };
  int64_t line_no = 0, offset = 0;  // 1-based line, byte offset of its start in the file
  while (std::getline(in, line)) {
    ++line_no;
    for (size_t i = 0; i < line.size();) {
      const size_t n = utf8_sequence(line, i);
      KOFF_CHECK(n > 0, "{}:{}: invalid UTF-8 (byte 0x{:02X} at byte offset {} of the file)", path, line_no,
                 static_cast<unsigned char>(line[i]), offset + static_cast<int64_t>(i));
      i += n;
    }
    offset += static_cast<int64_t>(line.size()) + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const bool blank = line.find_first_not_of(" \t") == std::string::npos;
    if (blank) {
      flush();
    } else {
      if (!current.empty()) current += '\n';
      current += line;
    }
  }
  flush();
  KOFF_CHECK(!out.empty(), "{} has no text", path);
  return out;
}

std::vector<int32_t> tokenize(const Tokenizer& tokenizer, const std::vector<std::string>& paragraphs, int64_t eos) {
  std::vector<std::vector<uint32_t>> encoded;
  try {
    encoded = tokenizer.encode_batch(paragraphs, true);
  } catch (const std::exception& e) {
    fail("tokenizing: {}", e.what());
  }
  std::vector<int32_t> stream;
  for (const auto& ids : encoded) {
    for (uint32_t id : ids) stream.push_back(static_cast<int32_t>(id));
    if (eos >= 0) stream.push_back(static_cast<int32_t>(eos));
  }
  return stream;
}

Batch sample_batch(const std::vector<int32_t>& stream, int64_t batch, int64_t seq, const Philox& rng, uint64_t first) {
  const int64_t n = static_cast<int64_t>(stream.size());
  KOFF_CHECK(n > seq + 1, "token stream of {} tokens is too short for windows of {}", n, seq + 1);
  Batch b{Tensor::empty({batch, seq}, DType::i64), Tensor::empty({batch, seq}, DType::i64), batch * seq};
  int64_t* ids = b.ids.data<int64_t>();
  int64_t* tg = b.targets.data<int64_t>();
  for (int64_t i = 0; i < batch; ++i) {
    const int64_t start = static_cast<int64_t>(rng.bits(first + static_cast<uint64_t>(i)) % uint64_t(n - seq - 1));
    for (int64_t t = 0; t < seq; ++t) {
      ids[i * seq + t] = stream[static_cast<size_t>(start + t)];
      tg[i * seq + t] = stream[static_cast<size_t>(start + t + 1)];
    }
  }
  return b;
}

std::vector<Batch> eval_windows(const std::vector<int32_t>& stream, int64_t seq, int64_t max_windows) {
  KOFF_CHECK(seq >= 1, "evaluation windows of {} tokens: must be at least 1", seq);
  std::vector<Batch> out;
  const int64_t n = static_cast<int64_t>(stream.size());
  for (int64_t start = 0; start + 1 < n; start += seq) {
    if (max_windows > 0 && static_cast<int64_t>(out.size()) >= max_windows) break;
    const int64_t len = std::min(seq, n - 1 - start);
    Batch b{Tensor::empty({1, len}, DType::i64), Tensor::empty({1, len}, DType::i64), len};
    for (int64_t t = 0; t < len; ++t) {
      b.ids.data<int64_t>()[t] = stream[static_cast<size_t>(start + t)];
      b.targets.data<int64_t>()[t] = stream[static_cast<size_t>(start + t + 1)];
    }
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace koff::data
