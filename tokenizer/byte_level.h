// GPT-2's byte-level alphabet: every byte 0..255 is shown as one printable code point, so a
// byte-level vocabulary is a set of ordinary strings. Printable Latin-1 bytes ('!'..'~', '¡'..'¬',
// '®'..'ÿ') stand for themselves; the other 68 bytes map in order to U+0100, U+0101, ...
// (so a space is 'Ġ' U+0120 and a newline 'Ċ' U+010A).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace koff::byte_level {

struct Alphabet {
  std::array<char32_t, 256> byte_to_char{};
  std::array<std::string, 256> byte_to_utf8;  // the same, encoded
  // Inverse map for code points below 0x144 (the largest used); -1 where unused.
  std::array<int16_t, 0x144> char_to_byte{};
};

const Alphabet& alphabet();

// The byte-level form of raw bytes (what the BPE vocabulary is written in).
std::string encode(std::string_view bytes);

// The raw bytes of a byte-level token; false when some character is outside the alphabet.
bool decode(std::string_view token, std::string& bytes_out);

}  // namespace koff::byte_level
