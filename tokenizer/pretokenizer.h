// Hand-written matchers for the pre-tokenizer regexes of GPT-2, Llama 3, Qwen 2.5/3 and Qwen 3.5.
//
// Hugging Face `tokenizers` runs these patterns through Oniguruma (leftmost-first alternation,
// greedy quantifiers with backtracking). A general regex engine is slow and std::regex cannot
// express \p{L}; instead each pattern is matched by a function that follows Oniguruma's
// backtracking order alternative by alternative, so the pieces are identical, byte for byte.
// tokenizer.json names a pattern by its regex source; recognize_split_pattern maps the exact
// strings we know to a matcher, and anything else is refused with a clear error.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

namespace koff {

enum class SplitPattern {
  // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  Gpt2,
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Llama3,
  // As Llama3 but \p{N} one digit at a time (Qwen 2, 2.5, 3).
  Qwen2,
  // As Qwen2 with combining marks in the letter runs (Qwen 3.5):
  // (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  Qwen35,
};

std::optional<SplitPattern> recognize_split_pattern(std::string_view regex);
std::string_view split_pattern_regex(SplitPattern pattern);
std::optional<SplitPattern> split_pattern_from_name(std::string_view name);

// Appends to `out` the pieces of `text` (valid UTF-8) in order; they cover the whole text, as
// `Split(pattern, behavior=Isolated)` does. Pieces are views into `text`.
void split_by_pattern(SplitPattern pattern, std::string_view text, std::vector<std::string_view>& out);

// The end of the piece that starts at byte `pos` (< text.size()) of `text`: the streaming form of
// split_by_pattern, for callers that consume pieces one at a time.
size_t split_pattern_piece_end(SplitPattern pattern, std::string_view text, size_t pos);

// True when a piece of `pattern` always starts at byte `pos` of `text`, whatever came before:
// the character before pos is not whitespace and the one at pos is whitespace other than \r, \n.
// No alternative of these patterns consumes a non-space and then such a space (only \r\n may
// follow punctuation), and none looks behind, so matching restarted at pos gives the same
// pieces as matching from the beginning; this is what lets encoding split long text across threads.
bool is_safe_split_point(std::string_view text, size_t pos);
// Cut points 0 = c_0 < c_1 < ... < c_k = text.size() near `parts` equal shares, each a safe split
// point: the chunks pre-tokenize exactly as the whole text would (used to spread work over threads).
std::vector<size_t> safe_split_points(std::string_view text, int parts);

}  // namespace koff
