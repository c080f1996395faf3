// The one exception type of tokenizer/: a message that names the file and the field (or the
// input offset) at fault, printed by the CLI as one line.
#pragma once

#include <stdexcept>
#include <string>

namespace koff {

class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace koff
