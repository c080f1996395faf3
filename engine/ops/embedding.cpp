// Embedding lookup and its scatter-add gradient.
#include "engine/ops/checks.h"
#include "engine/ops/dispatch.h"
#include "engine/ops/ops.h"

namespace koff::ops {

using namespace detail;

// ---- embedding -----------------------------------------------------------------------------

Tensor embedding(const Tensor& table, const Tensor& ids) {
  check_float(table, "embedding", "table");
  check_index(ids, "embedding", "ids");
  check_same_device(table, ids, "embedding");
  check_dim(table, 2, "embedding", "table");
  Shape out_shape = ids.shape();
  out_shape.push_back(table.size(1));
  Tensor out = empty_like(table, out_shape);
  // Bytes: the rows read are as many as written.
  launch(table.device(), {"embedding", bytes_of({&ids, &out, &out})}, &Backend::embedding, table.contiguous(),
         ids.contiguous(), out);
  return out;
}

Tensor embedding_backward(const Tensor& dy, const Tensor& ids, int64_t vocab) {
  check_float(dy, "embedding_backward", "dy");
  check_index(ids, "embedding_backward", "ids");
  check_same_device(dy, ids, "embedding_backward");
  KOFF_CHECK(dy.dim() == ids.dim() + 1 && leading(dy.shape()) == ids.shape(),
             "embedding_backward: dy {} does not match ids {} (expected ids shape + [d])", shape_str(dy.shape()),
             shape_str(ids.shape()));
  KOFF_CHECK(vocab >= 0, "embedding_backward: negative vocab {}", vocab);
  Tensor dtable = Tensor::zeros({vocab, dy.size(-1)}, dy.dtype(), dy.device());
  launch(dy.device(), {"embedding_backward", bytes_of({&dy, &ids, &dy})}, &Backend::embedding_backward, dy.contiguous(),
         ids.contiguous(), dtable);
  return dtable;
}

}  // namespace koff::ops
