// libFuzzer target over the tokenizer.json reader and the encoder/decoder.
//
// The first input byte picks the mode, the rest is the payload:
//   0: the payload is a tokenizer.json. It must load or throw TokenizerError; if it loads, encoding
//      and decoding a fixed text must not crash.
//   1: the payload is text for a byte-level tokenizer trained at start-up. Invalid UTF-8 must
//      throw TokenizerError; valid text must decode back to itself exactly.
//   2: the payload is text for a SentencePiece-style tokenizer (Prepend/Replace normalizer,
//      byte_fallback, <unk>, fused decoder); it must encode and decode without crashing, and
//      round-trip when it contains no special token text and no U+2581.
// Any other exception, a crash or a sanitizer report is a bug. Build and run: run_fuzz.sh.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"
#include "tokenizer/trainer.h"
#include "tokenizer/unicode.h"

namespace {

const koff::Tokenizer& byte_level_tokenizer() {
  static const koff::Tokenizer tok = [] {
    koff::BpeTrainerOptions opt;
    opt.vocab_size = 600;
    opt.special_tokens = {"<|endoftext|>", "<|bos|>"};
    opt.bos_token = "<|bos|>";
    opt.min_frequency = 1;
    opt.threads = 1;
    koff::BpeTrainer trainer(opt);
    trainer.add_text(
        "The quick brown fox jumps over the lazy dog. Der schnelle braune Fuchs springt über den faulen Hund. "
        "Le renard brun rapide saute par-dessus le chien paresseux. 敏捷的棕色狐狸跳过了懒狗。 "
        "Быстрая коричневая лиса прыгает через ленивую собаку. 12345 67890 it's they'll we've\n\n\t  end");
    koff::Tokenizer t = koff::Tokenizer::from_json(trainer.train(), "fuzz-trained");
    t.set_num_threads(2);
    return t;
  }();
  return tok;
}

const koff::Tokenizer& sentencepiece_tokenizer() {
  static const koff::Tokenizer tok = [] {
    std::string vocab = R"("<unk>": 0, "<s>": 1, "</s>": 2)";
    for (int b = 0; b < 256; ++b) {
      char buf[32];
      std::snprintf(buf, sizeof buf, R"(, "<0x%02X>": %d)", b, 3 + b);
      vocab += buf;
    }
    vocab += R"(, "\u2581": 259, "a": 260, "b": 261, "\u2581a": 262, "ab": 263, "\u2581ab": 264, "é": 265)";
    std::string json = R"({"added_tokens": [
        {"id": 0, "content": "<unk>", "special": true, "normalized": false},
        {"id": 1, "content": "<s>", "special": true, "normalized": false},
        {"id": 2, "content": "</s>", "special": true, "normalized": false}],
      "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                     {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
      "pre_tokenizer": null,
      "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
          {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
          "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
      "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
          {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
      "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": true, "byte_fallback": true,
                "vocab": {)" +
                       vocab + R"(}, "merges": ["\u2581 a", "a b", "\u2581a b"]}})";
    return koff::Tokenizer::from_json(json, "fuzz-sentencepiece");
  }();
  return tok;
}

[[noreturn]] void bug(const char* what, std::string_view input) {
  std::fprintf(stderr, "fuzz_tokenizer: %s (input of %zu bytes)\n", what, input.size());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view payload(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool valid = koff::unicode::find_invalid_utf8(payload) == std::string_view::npos;
  switch (data[0] % 3) {
    case 0: {
      try {
        koff::Tokenizer tok = koff::Tokenizer::from_json(payload, "fuzz.json");
        auto ids = tok.encode("Hello wörld 123 <s> \xE4\xB8\xAD\n\n  x");
        (void)tok.decode(ids, true);
      } catch (const koff::TokenizerError&) {
      }
      break;
    }
    case 1: {
      const koff::Tokenizer& tok = byte_level_tokenizer();
      try {
        auto ids = tok.encode(payload, false);
        if (!valid) bug("invalid UTF-8 was accepted", payload);
        if (tok.decode(ids) != payload) bug("decode(encode(x)) != x", payload);
      } catch (const koff::TokenizerError&) {
        if (valid) bug("valid UTF-8 was refused", payload);
      }
      break;
    }
    default: {
      const koff::Tokenizer& tok = sentencepiece_tokenizer();
      try {
        auto ids = tok.encode(payload, true);
        if (!valid) bug("invalid UTF-8 was accepted", payload);
        std::string back = tok.decode(ids, true);
        bool has_special_text = payload.find("<s>") != std::string_view::npos ||
                                payload.find("</s>") != std::string_view::npos ||
                                payload.find("<unk>") != std::string_view::npos;
        // U+2581 in the input decodes to a space, as in every SentencePiece-style tokenizer.
        bool has_metaspace = payload.find("\u2581") != std::string_view::npos;
        if (!has_special_text && !has_metaspace && back != payload) bug("decode(encode(x)) != x", payload);
      } catch (const koff::TokenizerError&) {
        if (valid) bug("valid UTF-8 was refused", payload);
      }
      break;
    }
  }
  return 0;
}
