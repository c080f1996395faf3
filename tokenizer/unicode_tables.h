// Declarations of the tables that tools/gen_unicode_tables.py generates into unicode_tables.cpp
// from the Unicode Character Database. Read through tokenizer/unicode.h, not directly.
#pragma once

#include <cstddef>
#include <cstdint>

namespace koff::unicode_tables {

// Per-code-point class bits (see unicode.h) and canonical combining class, each as a two-level
// table: stage1[cp >> 8] picks a de-duplicated 256-entry block, stage2[block][cp & 255] the value.
extern const uint16_t kClassStage1[];
extern const uint8_t kClassStage2[][256];
extern const uint16_t kCccStage1[];
extern const uint8_t kCccStage2[][256];

// Full (recursive) decompositions, sorted by code point; `compat` entries hold the
// canonical+compatibility decomposition where it differs from the canonical one.
struct DecompositionEntry {
  uint32_t code_point;
  uint8_t compat;
  uint32_t offset;  // into kDecompositionData
  uint8_t length;
};
extern const DecompositionEntry kDecompositions[];
extern const size_t kDecompositionCount;
extern const uint32_t kDecompositionData[];

// Primary composites (canonical pairs minus Full_Composition_Exclusion), sorted by (first, second).
// Hangul syllables are composed algorithmically and are not listed.
struct CompositionEntry {
  uint32_t first;
  uint32_t second;
  uint32_t composite;
};
extern const CompositionEntry kCompositions[];
extern const size_t kCompositionCount;

}  // namespace koff::unicode_tables
