// The fused ops against PyTorch (tests/torch_reference.py, run by ctest as a fixture before this
// suite): outputs and input gradients of sum(output * probe), in f32 (relative error < 1e-5) and
// f64 (< 1e-9). Relative error is max|ours - torch| / max|torch| over the tensor.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <map>

#include "autograd/functions.h"

namespace koff {
namespace {

namespace ag = autograd;
using ag::Variable;
using nlohmann::json;

const json& reference() {
  static json doc = [] {
    std::string path = std::string(KOFF_TEST_REFDIR) + "/fused_ops.json";
    std::ifstream in(path);
    if (!in) throw Error("cannot open " + path + " (written by tests/torch_reference.py; run the tests with ctest)");
    return json::parse(in);
  }();
  return doc;
}

Tensor from_json(const json& j, DType dtype) {
  Shape shape = j.at("shape").get<Shape>();
  std::vector<double> data = j.at("data").get<std::vector<double>>();
  return Tensor::from_vector(data, shape).to(dtype);
}

struct CaseRun {
  Variable output;
  std::map<std::string, Variable> inputs;
};

// Runs koff's op for a reference case.
CaseRun run_case(const json& c, DType dtype) {
  CaseRun r;
  for (auto& [name, t] : c.at("inputs").items()) r.inputs[name] = Variable(from_json(t, dtype), true, name);
  const std::string name = c.at("name");
  const json& p = c.at("params");
  auto in = [&](const char* n) { return r.inputs.at(n); };
  auto targets = [&] { return Tensor::from_vector(c.at("targets").get<std::vector<int64_t>>(), {int64_t(c.at("targets").size())}); };
  if (name == "rmsnorm") {
    r.output = ag::rmsnorm(in("x"), in("w"), p.at("eps"));
  } else if (name == "rope" || name == "rope_llama3") {
    ops::RopeScaling s{p.at("factor"), p.at("low_freq_factor"), p.at("high_freq_factor"),
                       p.at("original_max_position_embeddings")};
    const Shape& xs = in("x").shape();
    auto tables = ops::rope_tables(p.at("start"), xs[1], xs[3], p.at("theta"), s, dtype);
    r.output = ag::rope(in("x"), tables);
  } else if (name == "swiglu") {
    r.output = ag::swiglu(in("gate"), in("up"));
  } else if (name == "attention_gqa_memory") {
    r.output = ag::attention(in("q"), in("k"), in("v"), in("mem_k"), in("mem_v"), p.at("scale"), true);
  } else if (name == "cross_entropy") {
    r.output = ag::cross_entropy(in("logits"), targets());
  } else if (name == "linear_cross_entropy") {
    r.output = ag::linear_cross_entropy(in("h"), in("w"), targets(), 0, 3);
  } else if (name == "kl_div") {
    r.output = ag::kl_div(in("logits"), from_json(c.at("teacher"), dtype), 1.0);
  } else {
    throw Error("unknown reference case " + name);
  }
  return r;
}

class TorchParity : public ::testing::TestWithParam<std::string> {};

TEST_P(TorchParity, OutputAndGradientsMatch) {
  const auto [name, dtype_name_str] = [&] {
    std::string p = GetParam();
    auto cut = p.rfind('_');
    return std::pair{p.substr(0, cut), p.substr(cut + 1)};
  }();
  const DType dtype = dtype_from_name(dtype_name_str);
  const double tol = dtype == DType::f32 ? 1e-5 : 1e-9;
  bool found = false;
  for (const json& c : reference().at("cases")) {
    if (c.at("name") != name || c.at("dtype") != dtype_name_str) continue;
    found = true;
    CaseRun r = run_case(c, dtype);
    Tensor want = from_json(c.at("output"), DType::f64);
    ASSERT_EQ(shape_str(r.output.shape()), shape_str(want.shape()));
    EXPECT_LT(max_rel_error(r.output.data(), want), tol) << "output";
    Tensor probe = from_json(c.at("probe"), dtype);
    ag::dot(r.output, Variable(probe.reshape(r.output.shape()))).backward();
    for (auto& [input, g] : c.at("grads").items()) {
      ASSERT_TRUE(r.inputs.at(input).grad().defined()) << input;
      EXPECT_LT(max_rel_error(r.inputs.at(input).grad(), from_json(g, DType::f64)), tol) << "gradient of " << input;
    }
  }
  EXPECT_TRUE(found) << "no reference case " << GetParam();
}

INSTANTIATE_TEST_SUITE_P(FusedOps, TorchParity,
                         ::testing::Values("rmsnorm_f32", "rmsnorm_f64", "rope_f32", "rope_f64", "rope_llama3_f32",
                                           "rope_llama3_f64", "swiglu_f32", "swiglu_f64", "attention_gqa_memory_f32",
                                           "attention_gqa_memory_f64", "cross_entropy_f32", "cross_entropy_f64",
                                           "linear_cross_entropy_f32", "linear_cross_entropy_f64", "kl_div_f32",
                                           "kl_div_f64"),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace koff
