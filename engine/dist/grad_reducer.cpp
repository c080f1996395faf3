#include "engine/dist/grad_reducer.h"

#include <algorithm>

namespace koff::dist {

GradReducer::GradReducer(Communicator& comm, std::vector<autograd::Variable> params, size_t bucket_bytes,
                         Communicator* host)
    : comm_(comm), host_(host ? *host : comm), params_(std::move(params)),
      bucket_bytes_(std::max<size_t>(bucket_bytes, 1)) {
  KOFF_CHECK(host_.device().is_cpu(), "{}: the order broadcast needs a host communicator, got {}", comm_.where(),
             host_.where());
  KOFF_CHECK(host_.rank() == comm_.rank() && host_.world_size() == comm_.world_size(),
             "{} and {} are not the same ranks", comm_.where(), host_.where());
  for (const auto& p : params_) {
    KOFF_CHECK(p.defined() && p.requires_grad(), "{}: gradient reduction of '{}', which is not trainable",
               comm_.where(), p.defined() ? p.name() : "(undefined)");
    KOFF_CHECK(p.data().device() == comm_.device(),
               "{}: trainable '{}' is on {} but this communicator reduces buffers on {}", comm_.where(), p.name(),
               p.data().device().str(), comm_.device().str());
  }
  ready_.assign(params_.size(), false);
}

GradReducer::~GradReducer() { clear_hooks(); }

void GradReducer::clear_hooks() {
  for (auto& p : params_) p.impl()->grad_ready_hook = nullptr;
}

void GradReducer::arm() {
  KOFF_CHECK(!armed_, "{}: GradReducer::arm() twice without finish()", comm_.where());
  armed_ = true;
  std::fill(ready_.begin(), ready_.end(), false);
  ready_order_.clear();
  next_launch_ = 0, launched_early_ = 0;
  for (auto& b : buckets_) b.remaining = b.params.size(), b.work.reset();
  for (size_t i = 0; i < params_.size(); ++i) params_[i].impl()->grad_ready_hook = [this, i] { on_ready(i); };
}

void GradReducer::on_ready(size_t i) {
  if (ready_[i]) return;
  ready_[i] = true;
  if (buckets_.empty()) {  // first step: learn the order, reduce later
    ready_order_.push_back(static_cast<int32_t>(i));
    return;
  }
  copy_in(i);
  launch_ready();
}

void GradReducer::copy_in(size_t i) {
  Bucket& b = buckets_[bucket_of_[i]];
  const Tensor& g = params_[i].grad();
  const int64_t n = params_[i].data().numel(), off = b.offsets[slot_of_[i]];
  Tensor slot = b.buffer.slice(0, off, off + n);
  if (g.defined())
    slot.copy_(g.reshape({n}));  // converts to f32: gradients are reduced in f32
  else
    slot.zero_();
  --b.remaining;
}

void GradReducer::launch_ready() {
  while (next_launch_ < buckets_.size() && buckets_[next_launch_].remaining == 0) {
    Bucket& b = buckets_[next_launch_++];
    b.work = comm_.all_reduce_sum_async(b.buffer);
    if (armed_) ++launched_early_;
  }
}

void GradReducer::plan(const std::vector<int32_t>& order) {
  buckets_.clear();
  bucket_of_.assign(params_.size(), 0);
  slot_of_.assign(params_.size(), 0);
  Bucket current;
  int64_t elements = 0;
  auto close = [&] {
    if (current.params.empty()) return;
    current.buffer = Tensor::zeros({elements}, DType::f32, params_[current.params.front()].data().device());
    buckets_.push_back(std::move(current));
    current = Bucket();
    elements = 0;
  };
  for (int32_t o : order) {
    const size_t i = static_cast<size_t>(o);
    bucket_of_[i] = buckets_.size();
    slot_of_[i] = current.params.size();
    current.params.push_back(i);
    current.offsets.push_back(elements);
    elements += params_[i].data().numel();
    if (static_cast<size_t>(elements) * sizeof(float) >= bucket_bytes_) close();
  }
  close();
}

void GradReducer::finish() {
  KOFF_CHECK(armed_, "{}: GradReducer::finish() without arm()", comm_.where());
  clear_hooks();
  if (buckets_.empty()) {
    // First step: rank 0's ready order (then the trainables no gradient reached) becomes everyone's.
    std::vector<int32_t> order = ready_order_;
    for (size_t i = 0; i < params_.size(); ++i)
      if (!ready_[i]) order.push_back(static_cast<int32_t>(i));
    host_.broadcast(order.data(), order.size() * sizeof(int32_t), 0);
    std::vector<bool> seen(params_.size(), false);
    for (int32_t o : order) {
      KOFF_CHECK(o >= 0 && static_cast<size_t>(o) < params_.size() && !seen[static_cast<size_t>(o)],
                 "{}: rank 0 sent a gradient order that is not a permutation of the {} trainables (ranks disagree "
                 "on the trainables?)",
                 comm_.where(), params_.size());
      seen[static_cast<size_t>(o)] = true;
    }
    plan(order);
    for (auto& b : buckets_) b.remaining = b.params.size();
    std::fill(ready_.begin(), ready_.end(), false);
  }
  armed_ = false;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!ready_[i]) ready_[i] = true, copy_in(i);
  launch_ready();
  for (Bucket& b : buckets_) {
    b.work->wait();
    for (size_t s = 0; s < b.params.size(); ++s) {
      auto& p = params_[b.params[s]];
      const int64_t n = p.data().numel();
      Tensor& g = p.mutable_grad();
      if (!g.defined()) g = Tensor::zeros(p.shape(), p.dtype(), p.data().device());
      g.copy_(b.buffer.slice(0, b.offsets[s], b.offsets[s] + n).view(p.shape()));
    }
    b.work.reset();
  }
}

}  // namespace koff::dist
