#include "tokenizer/byte_level.h"

#include "tokenizer/unicode.h"

namespace koff::byte_level {

static Alphabet build_alphabet() {
  Alphabet a;
  a.char_to_byte.fill(-1);
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    char32_t cp = printable ? static_cast<char32_t>(b) : next++;
    a.byte_to_char[b] = cp;
    unicode::append_utf8(a.byte_to_utf8[b], cp);
    a.char_to_byte[cp] = static_cast<int16_t>(b);
  }
  return a;
}

const Alphabet& alphabet() {
  static const Alphabet a = build_alphabet();
  return a;
}

std::string encode(std::string_view bytes) {
  const Alphabet& a = alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += a.byte_to_utf8[b];
  return out;
}

bool decode(std::string_view token, std::string& bytes_out) {
  const Alphabet& a = alphabet();
  std::string out;
  for (size_t i = 0; i < token.size();) {
    char32_t cp = unicode::decode_utf8(token, i);
    if (cp >= a.char_to_byte.size() || a.char_to_byte[cp] < 0) return false;
    out.push_back(static_cast<char>(a.char_to_byte[cp]));
  }
  bytes_out += out;
  return true;
}

}  // namespace koff::byte_level
