// Helpers shared by the tokenizer tests: where the generated reference data lives, JSON Lines.
#pragma once

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace koff::test {

#ifndef KOFF_TOKENIZER_TESTDATA_DEFAULT
#define KOFF_TOKENIZER_TESTDATA_DEFAULT ""
#endif
#ifndef KOFF_TOKENIZER_SOURCE_DEFAULT
#define KOFF_TOKENIZER_SOURCE_DEFAULT ""
#endif
#ifndef KOFF_PYTHON_DEFAULT
#define KOFF_PYTHON_DEFAULT ""
#endif

// An environment variable, else the value CMake built in.
inline std::string setting(const char* name, const char* built_in) {
  const char* v = std::getenv(name);
  return v && *v ? v : built_in;
}
// The folder the ctest fixture (prepare_testdata.py) writes into.
inline std::string testdata_dir() { return setting("KOFF_TOKENIZER_TESTDATA", KOFF_TOKENIZER_TESTDATA_DEFAULT); }
inline std::string source_dir() { return setting("KOFF_TOKENIZER_SOURCE", KOFF_TOKENIZER_SOURCE_DEFAULT); }
inline std::string python() { return setting("KOFF_PYTHON", KOFF_PYTHON_DEFAULT); }

inline std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace koff::test
