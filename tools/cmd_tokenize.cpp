// `koff tokenize`: text on stdin to ids on stdout, one line of space-separated ids per input line
// (the newline itself is not encoded), or back with --decode. Lines are encoded in batches across
// threads; output order is input order. With --json-lines each input line is one JSON string, so
// a record can be any text (newlines included), and --decode writes each text as a JSON string.
#include <fmt/core.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/nn/model_files.h"
#include "tokenizer/tokenizer.h"
#include "tools/cli.h"

namespace {

struct TokenizeOptions {
  std::string tokenizer;
  bool decode = false;
  bool no_special_tokens = false;
  bool skip_special_tokens = false;
  bool json_lines = false;
  int threads = 0;
};

// One line of JSON Lines input: a JSON string, the record's text.
std::string parse_json_record(const std::string& line, size_t line_no) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    throw koff::TokenizerError(fmt::format("stdin line {}: not a JSON string (--json-lines): {}", line_no, e.what()));
  }
  if (!j.is_string())
    throw koff::TokenizerError(fmt::format("stdin line {}: --json-lines takes one JSON string per line, got a JSON {}",
                                           line_no, j.type_name()));
  return j.get<std::string>();
}

void flush_encoded(const koff::Tokenizer& tok, const std::vector<std::string>& lines, size_t first_line,
                   bool add_special, std::string& out) {
  std::vector<std::vector<uint32_t>> ids;
  try {
    ids = tok.encode_batch(lines, add_special);
  } catch (const koff::TokenizerError&) {
    // Name the offending line: re-encode one by one to find it.
    for (size_t i = 0; i < lines.size(); ++i) {
      try {
        (void)tok.encode(lines[i], add_special);
      } catch (const koff::TokenizerError& e) {
        throw koff::TokenizerError(fmt::format("stdin line {}: {}", first_line + i + 1, e.what()));
      }
    }
    throw;
  }
  for (const auto& row : ids) {
    for (size_t k = 0; k < row.size(); ++k) {
      if (k) out.push_back(' ');
      out += std::to_string(row[k]);
    }
    out.push_back('\n');
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  out.clear();
}

std::vector<uint32_t> parse_ids(const std::string& line, size_t line_no) {
  std::vector<uint32_t> ids;
  size_t i = 0;
  while (i < line.size()) {
    if (line[i] == ' ' || line[i] == ',' || line[i] == '\t' || line[i] == '\r') {
      ++i;
      continue;
    }
    size_t j = i;
    uint64_t v = 0;
    while (j < line.size() && line[j] >= '0' && line[j] <= '9' && v <= 0xFFFFFFFFull) v = v * 10 + (line[j++] - '0');
    if (j == i || v > 0xFFFFFFFFull ||
        (j < line.size() && line[j] != ' ' && line[j] != ',' && line[j] != '\t' && line[j] != '\r'))
      throw koff::TokenizerError(fmt::format(
          "stdin line {}: expected token ids separated by spaces or commas, got \"{}\"", line_no, line.substr(i, 40)));
    ids.push_back(static_cast<uint32_t>(v));
    i = j;
  }
  return ids;
}

int run(const TokenizeOptions& opt) {
  // A GGUF model's tokenizer lives in its metadata (tokenizer.ggml.*).
  koff::Tokenizer tok = koff::nn::is_gguf_model(opt.tokenizer) ? koff::nn::load_tokenizer(opt.tokenizer)
                                                               : koff::Tokenizer::from_file(opt.tokenizer);
  if (opt.threads > 0) tok.set_num_threads(opt.threads);
  std::ios::sync_with_stdio(false);
  std::string line, out;
  size_t line_no = 0;
  if (opt.decode) {
    while (std::getline(std::cin, line)) {
      ++line_no;
      auto ids = parse_ids(line, line_no);
      try {
        std::string text = tok.decode(ids, opt.skip_special_tokens);
        out +=
            opt.json_lines ? nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) : text;
      } catch (const koff::TokenizerError& e) {
        throw koff::TokenizerError(fmt::format("stdin line {}: {}", line_no, e.what()));
      }
      out.push_back('\n');
      if (out.size() > (1 << 16)) {
        std::fwrite(out.data(), 1, out.size(), stdout);
        out.clear();
      }
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  }
  std::vector<std::string> batch;
  size_t batch_bytes = 0, first_line = 0;
  while (std::getline(std::cin, line)) {
    ++line_no;
    if (opt.json_lines) line = parse_json_record(line, line_no);
    batch_bytes += line.size();
    batch.push_back(std::move(line));
    if (batch.size() >= 8192 || batch_bytes >= (8u << 20)) {
      flush_encoded(tok, batch, first_line, !opt.no_special_tokens, out);
      first_line = line_no;
      batch.clear();
      batch_bytes = 0;
    }
  }
  flush_encoded(tok, batch, first_line, !opt.no_special_tokens, out);
  return 0;
}

const bool registered = koff::cli::add_command(
    {"tokenize", "text on stdin to token ids on stdout (one line of ids per input line), or back with --decode",
     [](CLI::App& sub) {
       auto opt = std::make_shared<TokenizeOptions>();
       sub.add_option("--tokenizer", opt->tokenizer, "Hugging Face tokenizer.json, or a GGUF model file")->required();
       sub.add_flag("--decode", opt->decode, "read lines of ids (space or comma separated), write the text");
       sub.add_flag("--no-special-tokens", opt->no_special_tokens,
                    "do not add the post-processor's tokens (e.g. BOS) when encoding");
       sub.add_flag("--skip-special-tokens", opt->skip_special_tokens, "leave special tokens out when decoding");
       sub.add_flag("--json-lines", opt->json_lines,
                    "each stdin line is one JSON string (any text, newlines included); --decode writes JSON strings");
       sub.add_option("--threads", opt->threads, "encoding threads (default: all cores)");
       return [opt] { return run(*opt); };
     }});

}  // namespace
