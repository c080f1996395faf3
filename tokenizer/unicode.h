// UTF-8 and the few Unicode properties the tokenizer needs: the classes behind the regex classes
// \p{L}, \p{N}, \s of the pre-tokenizer patterns, and Unicode normalization (NFC/NFD/NFKC/NFKD).
// The tables come from tools/gen_unicode_tables.py (Unicode Character Database, Debian's
// unicode-data), never typed by hand.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "tokenizer/unicode_tables.h"

namespace koff::unicode {

// Class bits of a code point; must match tools/gen_unicode_tables.py.
inline constexpr uint8_t kLetter = 1;    // general category L* (\p{L})
inline constexpr uint8_t kNumber = 2;    // general category N* (\p{N})
inline constexpr uint8_t kSpace = 4;     // White_Space (\s in Oniguruma, char::is_whitespace in Rust)
inline constexpr uint8_t kMark = 8;      // general category M*
inline constexpr uint8_t kNfcSafe = 16;  // a string made of such characters is already NFC

inline uint8_t char_class(char32_t cp) {
  if (cp >= 0x110000) return 0;
  return unicode_tables::kClassStage2[unicode_tables::kClassStage1[cp >> 8]][cp & 0xFF];
}
inline uint8_t combining_class(char32_t cp) {
  if (cp >= 0x110000) return 0;
  return unicode_tables::kCccStage2[unicode_tables::kCccStage1[cp >> 8]][cp & 0xFF];
}

// Decodes one code point of valid UTF-8 starting at s[i]; advances i. The input must have been
// validated (validate_utf8), so no checks here: this sits in the innermost loops.
inline char32_t decode_utf8(std::string_view s, size_t& i) {
  auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) {
    i += 1;
    return b0;
  }
  if (b0 < 0xE0) {
    char32_t cp = ((b0 & 0x1Fu) << 6) | (static_cast<unsigned char>(s[i + 1]) & 0x3Fu);
    i += 2;
    return cp;
  }
  if (b0 < 0xF0) {
    char32_t cp = ((b0 & 0x0Fu) << 12) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 6) |
                  (static_cast<unsigned char>(s[i + 2]) & 0x3Fu);
    i += 3;
    return cp;
  }
  char32_t cp = ((b0 & 0x07u) << 18) | ((static_cast<unsigned char>(s[i + 1]) & 0x3Fu) << 12) |
                ((static_cast<unsigned char>(s[i + 2]) & 0x3Fu) << 6) | (static_cast<unsigned char>(s[i + 3]) & 0x3Fu);
  i += 4;
  return cp;
}

// Length in bytes of the UTF-8 sequence that starts with lead byte b (valid input).
inline size_t utf8_length(unsigned char b) { return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4; }

void append_utf8(std::string& out, char32_t cp);

// Returns the byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and
// code points above U+10FFFF are invalid, as in Rust's str), or npos when the whole text is valid.
size_t find_invalid_utf8(std::string_view s);

// Rust's String::from_utf8_lossy: each maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

enum class NormalizationForm { NFC, NFD, NFKC, NFKD };
std::string normalize(std::string_view s, NormalizationForm form);

// True when normalize(s, NFC) == s is guaranteed without doing the work (all characters NFC-safe).
bool is_nfc_quick(std::string_view s);

}  // namespace koff::unicode
