// Token embedding: a row gather, whose gradient is a scatter-add into the table.
#include "autograd/functions.h"

namespace koff::autograd {

Variable embedding(const Variable& table, const Tensor& ids) {
  Tensor t = table.data();
  return make_result(ops::embedding(t, ids), {table}, "embedding",
                     [ids, vocab = t.size(0)](const Tensor& dy, const std::vector<bool>&) {
                       return std::vector<Tensor>{ops::embedding_backward(dy, ids, vocab)};
                     });
}

}  // namespace koff::autograd
