// Matrix products and the linear layer, with their gradients.
//
// A frozen operand (requires_grad false) gets no gradient and its gradient GEMM is skipped: for a
// frozen base model this halves the backward GEMM work (only activation gradients are computed).
#include "autograd/functions.h"

namespace koff::autograd {

using Grads = std::vector<Tensor>;

namespace {

// Reduces a broadcast 2-D operand's gradient [..., R, C] over the batch dims to [R, C].
Tensor sum_batches(const Tensor& g, int64_t rows, int64_t cols) {
  if (g.dim() == 2) return g;
  Tensor flat = g.reshape({-1, rows * cols});
  return ops::sum_to_last(flat).view({rows, cols});
}

}  // namespace

Variable matmul(const Variable& a, const Variable& b, bool trans_a, bool trans_b) {
  // C = op(A) op(B).  With op = identity:  dA = dC B^T,  dB = A^T dC.
  // Transposed operands swap the roles: if trans_a, dA = B dC^T (stored as A is, [K, M]), etc.
  Tensor ta = a.data(), tb = b.data();
  Tensor c = ops::matmul(ta, tb, trans_a, trans_b);
  return make_result(c, {a, b}, "matmul", [ta, tb, trans_a, trans_b](const Tensor& dc, const std::vector<bool>& n) {
    Tensor da, db;
    const bool b_shared = tb.dim() == 2 && ta.dim() > 2;
    if (n[0]) {
      // dA = dC op(B)^T, or its transpose when A was used transposed.
      if (!trans_a)
        da = ops::matmul(dc, tb, false, !trans_b);
      else if (b_shared)
        da = ops::matmul(dc, tb, false, !trans_b).transpose(-2, -1).contiguous();
      else
        da = ops::matmul(tb, dc, trans_b, true);
    }
    if (n[1]) {
      if (b_shared && !trans_a) {
        // B was shared by every batch of A: fold the batches into rows, dB = A2^T dC2 in one GEMM.
        Tensor a2 = ta.reshape({-1, ta.size(-1)}), dc2 = dc.reshape({-1, dc.size(-1)});
        db = trans_b ? ops::matmul(dc2, a2, true, false) : ops::matmul(a2, dc2, true, false);
      } else if (b_shared) {
        db = sum_batches(trans_b ? ops::matmul(dc, ta, true, true) : ops::matmul(ta, dc), tb.size(0), tb.size(1));
      } else {
        db = trans_b ? ops::matmul(dc, ta, true, trans_a) : ops::matmul(ta, dc, !trans_a, false);
      }
    }
    return Grads{da, db};
  });
}

Variable linear(const Variable& x, const Variable& w, const Variable& bias) {
  // y = x W^T + b;  dx = dy W,  dW = dy^T x (rows folded),  db = sum of dy over rows.
  Tensor tx = x.data(), tw = w.data();
  Tensor y = ops::linear(tx, tw, bias.defined() ? bias.data() : Tensor());
  std::vector<Variable> inputs = {x, w};
  if (bias.defined()) inputs.push_back(bias);
  return make_result(y, inputs, "linear", [tx, tw](const Tensor& dy, const std::vector<bool>& n) {
    Grads g(n.size());
    Tensor dy2 = dy.reshape({-1, dy.size(-1)});
    if (n[0]) g[0] = ops::matmul(dy, tw);
    if (n[1]) g[1] = ops::matmul(dy2, tx.reshape({-1, tx.size(-1)}), true, false);
    if (n.size() > 2 && n[2]) g[2] = ops::sum_to_last(dy2);
    return g;
  });
}

std::vector<LoraGroup> lora_groups(const std::vector<int64_t>& domain_of_sequence) {
  std::vector<LoraGroup> groups;
  for (size_t i = 0; i < domain_of_sequence.size(); ++i) {
    const int64_t b = static_cast<int64_t>(i), d = domain_of_sequence[i];
    if (!groups.empty() && groups.back().domain == d)
      groups.back().end = b + 1;
    else
      groups.push_back({b, b + 1, d});
  }
  return groups;
}

// The rows of group g in a [sequences * per_seq, cols] matrix.
static Tensor group_rows(const Tensor& t, const LoraGroup& g, int64_t per_seq) {
  return t.slice(0, g.begin * per_seq, g.end * per_seq);
}

Variable linear_lora(const Variable& x, const Variable& w, const Variable& bias, const Variable& a_table,
                     const Variable& b_table, const std::vector<LoraGroup>& groups, int64_t rank, double scale) {
  // Per group g (rows x_g of one domain d), with A = A_d [r, in], B = B_d [out, r], U_g = x_g A^T:
  //   forward   y = x W^T + b, then y_g += scale U_g B^T  (the GEMM accumulates: beta = 1)
  //   backward  dU_g = scale dY_g B;  dx = dY W, then dx_g += dU_g A  (beta = 1);
  //             dA_d += dU_g^T x_g;  dB_d += scale dY_g^T U_g
  // One GEMM pair per group instead of gathered per-sequence copies of A and B, per-sequence batched
  // GEMMs, a scale and an add; a group's rows are a contiguous slice, so no copies either.
  Tensor tx = x.data(), tw = w.data();
  KOFF_CHECK(tx.dim() >= 2 && !groups.empty(), "linear_lora: x {} with {} groups", shape_str(tx.shape()),
             groups.size());
  const int64_t seqs = tx.size(0), in = tx.size(-1), rows = tx.numel() / std::max<int64_t>(in, 1);
  const int64_t per_seq = rows / seqs, D = a_table.data().size(0), out = tw.size(0), r = rank;
  KOFF_CHECK(groups.front().begin == 0 && groups.back().end == seqs, "linear_lora: groups cover sequences [{}, {}) of {}",
             groups.front().begin, groups.back().end, seqs);
  for (size_t i = 0; i < groups.size(); ++i)
    KOFF_CHECK(groups[i].begin < groups[i].end && (i == 0 || groups[i].begin == groups[i - 1].end) &&
                   groups[i].domain >= 0 && groups[i].domain < D,
               "linear_lora: group {} is sequences [{}, {}) of domain {} ({} domains)", i, groups[i].begin,
               groups[i].end, groups[i].domain, D);
  KOFF_CHECK(a_table.data().numel() == D * r * in && b_table.data().numel() == D * out * r,
             "linear_lora: tables {} and {} do not hold rank-{} A [{}, {}] and B [{}, {}] per domain",
             shape_str(a_table.data().shape()), shape_str(b_table.data().shape()), r, r, in, out, r);
  // The tables in the compute dtype (a no-op when they already are).
  const Tensor at = a_table.data().to(tx.dtype()).contiguous().view({D, r, in});
  const Tensor bt = b_table.data().to(tx.dtype()).contiguous().view({D, out, r});
  Tensor y = ops::linear(tx, tw, bias.defined() ? bias.data() : Tensor());
  const Tensor x2 = tx.contiguous().reshape({rows, in});
  Tensor y2 = y.view({rows, out});
  Tensor u = Tensor::empty({rows, r}, tx.dtype(), tx.device());
  // The groups' GEMMs side by side (ops::gemm_many_into): first every U_g, then every y_g += scale U_g B^T.
  const auto rows_of = [per_seq](const Tensor& t, const LoraGroup& g) { return group_rows(t, g, per_seq); };
  std::vector<ops::GemmInto> first, second;
  for (const LoraGroup& g : groups) {
    first.push_back({rows_of(x2, g), at.select(0, g.domain), rows_of(u, g), false, true, 1.0, 0.0});
    second.push_back({rows_of(u, g), bt.select(0, g.domain), rows_of(y2, g), false, true, scale, 1.0});
  }
  ops::gemm_many_into(first);
  ops::gemm_many_into(second);
  std::vector<Variable> inputs = {x, w, a_table, b_table};
  if (bias.defined()) inputs.push_back(bias);
  const DType a_dtype = a_table.data().dtype(), b_dtype = b_table.data().dtype();
  return make_result(y, inputs, "linear_lora",
                     [x2, tw, at, bt, u, groups, per_seq, rows, in, out, r, D, scale, a_dtype, b_dtype,
                      xshape = tx.shape()](const Tensor& dy, const std::vector<bool>& n) {
                       Grads grad(n.size());
                       const Tensor dy2 = dy.contiguous().reshape({rows, out});
                       Tensor du = Tensor::empty({rows, r}, dy2.dtype(), dy2.device());
                       const auto rows_of = [per_seq](const Tensor& t, const LoraGroup& g) {
                         return group_rows(t, g, per_seq);
                       };
                       std::vector<ops::GemmInto> dus;
                       for (const LoraGroup& g : groups)
                         dus.push_back({rows_of(dy2, g), bt.select(0, g.domain), rows_of(du, g), false, false, scale,
                                        0.0});
                       ops::gemm_many_into(dus);
                       // dx, dA and dB read du, x, u and dy and write distinct tensors: one batch, except that
                       // a domain found in several groups (a batch not ordered by domain) accumulates into its
                       // dA_d and dB_d one group per batch: rounds[k] holds each domain's k-th group.
                       std::vector<std::vector<ops::GemmInto>> rounds(1);
                       std::vector<int64_t> seen(static_cast<size_t>(D), 0);
                       Tensor dx, da, db;
                       if (n[0]) {
                         dx = ops::matmul(dy2, tw);  // [rows, in]
                         for (const LoraGroup& g : groups)
                           rounds[0].push_back({rows_of(du, g), at.select(0, g.domain), rows_of(dx, g), false, false,
                                                1.0, 1.0});
                       }
                       if (n[1]) grad[1] = ops::matmul(dy2, x2, true, false);
                       if (n[2]) da = Tensor::zeros({D, r, in}, dy2.dtype(), dy2.device());
                       if (n[3]) db = Tensor::zeros({D, out, r}, dy2.dtype(), dy2.device());
                       for (const LoraGroup& g : groups) {
                         const auto k = static_cast<size_t>(seen[static_cast<size_t>(g.domain)]++);
                         if (k == rounds.size()) rounds.emplace_back();
                         if (n[2])  // dA_d += dU_g^T x_g
                           rounds[k].push_back({rows_of(du, g), rows_of(x2, g), da.select(0, g.domain), true, false,
                                                1.0, 1.0});
                         if (n[3])  // dB_d += scale dY_g^T U_g
                           rounds[k].push_back({rows_of(dy2, g), rows_of(u, g), db.select(0, g.domain), true, false,
                                                scale, 1.0});
                       }
                       for (const auto& round : rounds) ops::gemm_many_into(round);
                       if (n[0]) grad[0] = dx.view(xshape);
                       if (n[2]) grad[2] = da.view({D, r * in}).to(a_dtype);
                       if (n[3]) grad[3] = db.view({D, out * r}).to(b_dtype);
                       if (n.size() > 4 && n[4]) grad[4] = ops::sum_to_last(dy2);
                       return grad;
                     });
}

}  // namespace koff::autograd
