#include "engine/nn/optim.h"

namespace koff::nn {

void AdamW::add_group(std::string name, std::vector<autograd::Variable> params, const ops::AdamWConfig& config) {
  Group g{std::move(name), std::move(params), config, {}, {}};
  for (const auto& p : g.params) {
    KOFF_CHECK(p.requires_grad(), "optimizer group '{}': parameter '{}' does not require a gradient", g.name, p.name());
    g.m.push_back(Tensor::zeros(p.shape(), p.dtype(), p.data().device()));
    g.v.push_back(Tensor::zeros(p.shape(), p.dtype(), p.data().device()));
  }
  groups_.push_back(std::move(g));
}

void AdamW::step(const std::vector<double>& lr_scale) {
  ++step_;
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    Group& g = groups_[gi];
    ops::AdamWConfig c = g.config;
    if (gi < lr_scale.size()) c.lr *= lr_scale[gi];
    // One multi-tensor update per group (parameters without a gradient are skipped).
    std::vector<Tensor*> params, m, v;
    std::vector<Tensor> grads;
    for (size_t i = 0; i < g.params.size(); ++i) {
      params.push_back(&g.params[i].mutable_data());
      grads.push_back(g.params[i].grad());
      m.push_back(&g.m[i]), v.push_back(&g.v[i]);
    }
    ops::adamw_multi_(params, grads, m, v, c, step_);
  }
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params) p.zero_grad();
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> out;
  for (const auto& g : groups_)
    for (size_t i = 0; i < g.params.size(); ++i) {
      out.emplace_back(fmt::format("{}.{}.m", g.name, i), g.m[i]);
      out.emplace_back(fmt::format("{}.{}.v", g.name, i), g.v[i]);
    }
  return out;
}

void AdamW::load_state(const std::function<Tensor(const std::string&)>& get, int64_t step_count) {
  for (auto& g : groups_)
    for (size_t i = 0; i < g.params.size(); ++i) {
      for (auto [suffix, slot] : {std::pair{"m", &g.m[i]}, std::pair{"v", &g.v[i]}}) {
        Tensor t = get(fmt::format("{}.{}.{}", g.name, i, suffix));
        check_same_shape(t, *slot, "optimizer state");
        slot->copy_(t);
      }
    }
  step_ = step_count;
}

}  // namespace koff::nn
