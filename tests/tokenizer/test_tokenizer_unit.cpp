// Unit checks of the tokenizer's parts against independent references: Unicode's own
// NormalizationTest.txt, hand-derived regex splits (each checked once against HF), hand-computed
// BPE merges, and the errors for malformed input.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tests/tokenizer/test_support.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace koff {
namespace {

using unicode::NormalizationForm;

std::string from_hex_list(const std::string& field) {
  std::istringstream in(field);
  std::string out, hex;
  while (in >> hex) unicode::append_utf8(out, static_cast<char32_t>(std::stoul(hex, nullptr, 16)));
  return out;
}

// Every line of the Unicode Consortium's conformance file (from unicode-data, unpacked by the
// fixture): c2 == NFC(c1) == NFC(c2) == NFC(c3), c3 == NFD(c1..c3), c4 == NFKC(c1..c5), c5 == NFKD(c1..c5).
TEST(Unicode, NormalizationConformance) {
  std::string path = test::testdata_dir() + "/NormalizationTest.txt";
  std::ifstream in(path);
  ASSERT_TRUE(in) << path << " missing (the fixture unpacks it from /usr/share/unicode; apt-get install unicode-data)";
  size_t lines = 0, failures = 0;
  std::string first_failure;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#' || line[0] == '@') continue;
    std::vector<std::string> c;
    std::istringstream fields(line);
    for (std::string f; c.size() < 5 && std::getline(fields, f, ';');) c.push_back(from_hex_list(f));
    ASSERT_EQ(c.size(), 5u) << line;
    ++lines;
    auto check = [&](const std::string& want, const std::string& got) {
      if (want != got && !failures++) first_failure = line;
    };
    for (int k = 0; k < 3; ++k) {
      check(c[1], unicode::normalize(c[k], NormalizationForm::NFC));
      check(c[2], unicode::normalize(c[k], NormalizationForm::NFD));
    }
    for (int k = 0; k < 5; ++k) {
      check(c[3], unicode::normalize(c[k], NormalizationForm::NFKC));
      check(c[4], unicode::normalize(c[k], NormalizationForm::NFKD));
    }
    check(c[3], unicode::normalize(c[3], NormalizationForm::NFC));
    check(c[4], unicode::normalize(c[4], NormalizationForm::NFD));
  }
  EXPECT_GT(lines, 10000u);
  EXPECT_EQ(failures, 0u) << "first failing line: " << first_failure;
}

TEST(Unicode, Classes) {
  EXPECT_TRUE(unicode::char_class(U'a') & unicode::kLetter);
  EXPECT_TRUE(unicode::char_class(U'中') & unicode::kLetter);
  EXPECT_TRUE(unicode::char_class(U'٣') & unicode::kNumber);    // ARABIC-INDIC DIGIT THREE, Nd
  EXPECT_TRUE(unicode::char_class(U'½') & unicode::kNumber);    // No
  EXPECT_TRUE(unicode::char_class(0x3000) & unicode::kSpace);   // IDEOGRAPHIC SPACE
  EXPECT_TRUE(unicode::char_class(0x85) & unicode::kSpace);     // NEXT LINE
  EXPECT_FALSE(unicode::char_class(0x200B) & unicode::kSpace);  // ZERO WIDTH SPACE is Cf, not White_Space
  EXPECT_TRUE(unicode::char_class(0x301) & unicode::kMark);
  EXPECT_EQ(unicode::combining_class(0x301), 230);
}

TEST(Unicode, Utf8Validation) {
  EXPECT_EQ(unicode::find_invalid_utf8("plain ascii"), std::string::npos);
  EXPECT_EQ(unicode::find_invalid_utf8("Grüße 中文 😀"), std::string::npos);
  EXPECT_EQ(unicode::find_invalid_utf8("ab\xC3\x28"), 2u);           // bad continuation
  EXPECT_EQ(unicode::find_invalid_utf8("\xC0\xAF"), 0u);             // overlong '/'
  EXPECT_EQ(unicode::find_invalid_utf8("x\xED\xA0\x80"), 1u);        // UTF-16 surrogate
  EXPECT_EQ(unicode::find_invalid_utf8("xyz\xF4\x90\x80\x80"), 3u);  // above U+10FFFF
  EXPECT_EQ(unicode::find_invalid_utf8("12345678\xE2\x82"), 8u);     // truncated at the end
  // Rust's from_utf8_lossy: one U+FFFD per maximal invalid subpart.
  EXPECT_EQ(unicode::utf8_lossy("a\xE2\x82z"), "a\xEF\xBF\xBDz");
  EXPECT_EQ(unicode::utf8_lossy("\xFF\xFE"), "\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(ByteLevel, Alphabet) {
  EXPECT_EQ(byte_level::encode(" \n!"), "\xC4\xA0\xC4\x8A!");  // "ĠĊ!"
  std::string back;
  ASSERT_TRUE(byte_level::decode("\xC4\xA0\xC4\x8A!", back));
  EXPECT_EQ(back, " \n!");
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  std::string round;
  ASSERT_TRUE(byte_level::decode(byte_level::encode(all), round));
  EXPECT_EQ(round, all);
}

std::vector<std::string> split(SplitPattern p, std::string_view text) {
  std::vector<std::string_view> pieces;
  split_by_pattern(p, text, pieces);
  return {pieces.begin(), pieces.end()};
}

// Expected pieces derived by hand from the regexes (Oniguruma semantics) and confirmed with
// HF's pre_tokenize_str.
TEST(PreTokenizer, Llama3) {
  using V = std::vector<std::string>;
  // \s*[\r\n]+ takes up to the last newline; \s+(?!\S) leaves one space for the next word.
  EXPECT_EQ(split(SplitPattern::Llama3, "x  \n\n  y"), (V{"x", "  \n\n", " ", " y"}));
  // Case-insensitive contractions, including U+017F (long s, case-folds to s).
  EXPECT_EQ(split(SplitPattern::Llama3, "IT'S it'\u017f"), (V{"IT", "'S", " it", "'\u017f"}));
  EXPECT_EQ(split(SplitPattern::Llama3, "12345 \u3000z"), (V{"123", "45", " ", "\u3000z"}));
  EXPECT_EQ(split(SplitPattern::Llama3, "a...\n\nb"), (V{"a", "...\n\n", "b"}));
  EXPECT_EQ(split(SplitPattern::Qwen2, "12345"), (V{"1", "2", "3", "4", "5"}));
  EXPECT_EQ(split(SplitPattern::Llama3, " \t\u00a0\u3000z"), (V{" \t\u00a0", "\u3000z"}));
}

// Qwen 3.5: combining marks join letter runs ([\p{L}\p{M}]+) and leave the punctuation class;
// Qwen 2 splits the same text at every mark (confirmed with HF's pre_tokenize_str on both regexes).
TEST(PreTokenizer, Qwen35MarksJoinLetters) {
  using V = std::vector<std::string>;
  const std::string decomposed = "re\u0301sume\u0301 a\u0300!";
  EXPECT_EQ(split(SplitPattern::Qwen35, decomposed), (V{"re\u0301sume\u0301", " a\u0300", "!"}));
  EXPECT_EQ(split(SplitPattern::Qwen2, decomposed), (V{"re", "\u0301sume", "\u0301", " a", "\u0300!"}));
  EXPECT_EQ(split(SplitPattern::Qwen35, "\u0301x !\u0301 12"), (V{"\u0301x", " !", "\u0301", " ", "1", "2"}));
  EXPECT_EQ(split(SplitPattern::Qwen2, "\u0301x !\u0301 12"), (V{"\u0301x", " !\u0301", " ", "1", "2"}));
  EXPECT_EQ(recognize_split_pattern(split_pattern_regex(SplitPattern::Qwen35)), SplitPattern::Qwen35);
}

TEST(PreTokenizer, Gpt2) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split(SplitPattern::Gpt2, "Hello  world's 12345!!"), (V{"Hello", " ", " world", "'s", " 12345", "!!"}));
  EXPECT_EQ(split(SplitPattern::Gpt2, "IT'S  "), (V{"IT", "'", "S", "  "}));  // case-sensitive
}

TEST(PreTokenizer, RecognizesOnlyKnownPatterns) {
  EXPECT_EQ(recognize_split_pattern(split_pattern_regex(SplitPattern::Llama3)), SplitPattern::Llama3);
  EXPECT_FALSE(recognize_split_pattern(R"(\w+|\s+)"));
}

// A tiny hand-written tokenizer.json whose ids can be worked out on paper.
std::string tiny_json(const std::string& merges, const std::string& extra = "") {
  return R"({"added_tokens": [{"id": 9, "content": "<s>", "special": true, "normalized": false}],
    "normalizer": null, "pre_tokenizer": null,
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
       {"Sequence": {"id": "A", "type_id": 0}}], "pair": [],
       "special_tokens": {"<s>": {"id": "<s>", "ids": [9], "tokens": ["<s>"]}}},
    "decoder": null, )" +
         extra + R"(
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "<s>": 9},
              "merges": )" +
         merges + "}}";
}

TEST(Bpe, MergesByRankNotByPosition) {
  // (b,c) has the better rank, so "abc" -> a bc -> abc even though (a,b) comes first in the text.
  Tokenizer t = Tokenizer::from_json(tiny_json(R"(["b c", "a b", "a bc"])"));
  EXPECT_EQ(t.encode("abc", false), (std::vector<uint32_t>{5}));
  EXPECT_EQ(t.encode("abcab", true), (std::vector<uint32_t>{9, 5, 3}));
  // Without (a,bc) the word stops at a + bc.
  Tokenizer t2 = Tokenizer::from_json(tiny_json(R"([["b", "c"], ["a", "b"]])"));
  EXPECT_EQ(t2.encode("abc", false), (std::vector<uint32_t>{0, 4}));
  // Equal ranks cannot happen; equal pairs merge left to right: "abab" -> ab ab.
  EXPECT_EQ(t2.encode("abab", false), (std::vector<uint32_t>{3, 3}));
  EXPECT_EQ(t2.encode("ab<s>c", false), (std::vector<uint32_t>{3, 9, 2}));
  EXPECT_EQ(t2.decode(std::vector<uint32_t>{3, 9, 2}), "ab <s> c");  // no decoder: tokens joined by spaces
}

void expect_error(const std::string& json, const std::string& needle) {
  try {
    Tokenizer::from_json(json, "bad.json");
    ADD_FAILURE() << "no error for: " << json.substr(0, 200);
  } catch (const TokenizerError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("bad.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << "message \"" << msg << "\" does not name " << needle;
  }
}

TEST(Errors, MalformedOrUnsupportedFilesNameTheField) {
  expect_error("not json", "not valid JSON");
  expect_error("[1, 2]", "top level");
  expect_error("{}", "field 'model': missing");
  expect_error(R"({"model": {"type": "Unigram", "vocab": []}})", "'model.type'");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}})", "'model.vocab.a'");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a"]}})", "'model.merges[0]'");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}})", "'model.merges[0]'");
  expect_error(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}})", "'model.dropout'");
  expect_error(R"({"model": {"type": "BPE", "vocab": {}, "merges": {}}})", "'model.merges'");
  expect_error(
      tiny_json("[]", R"("pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"},)"),
      "'pre_tokenizer.pattern.Regex'");
  expect_error(tiny_json("[]", R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "Whitespace"}]},)"),
               "'pre_tokenizer.pretokenizers[0].type'");
  expect_error(tiny_json("[]", R"("normalizer": {"type": "Lowercase"},)"), "'normalizer.type'");
  expect_error(tiny_json("[]", R"("decoder": {"type": "WordPiece"},)"), "'decoder.type'");
  expect_error(tiny_json("[]", R"("added_tokens": [{"id": -1, "content": "x"}],)"), "'added_tokens[0].id'");
  expect_error(tiny_json("[]", R"("added_tokens": [{"id": 1}],)"), "'added_tokens[0].content'");
  expect_error(tiny_json("[]", R"("post_processor": {"type": "BertProcessing"},)"), "'post_processor.type'");
  expect_error(tiny_json("[]", R"("normalizer": 5,)"), "'normalizer'");
}

TEST(Errors, MissingFileAndInvalidInput) {
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), TokenizerError);
  Tokenizer t = Tokenizer::from_json(tiny_json("[]"));
  try {
    t.encode("ab\xC3\x28");
    ADD_FAILURE() << "invalid UTF-8 accepted";
  } catch (const TokenizerError& e) {
    EXPECT_NE(std::string(e.what()).find("invalid UTF-8 at byte offset 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(t.decode(std::vector<uint32_t>{1234}), TokenizerError);
}

}  // namespace
}  // namespace koff
