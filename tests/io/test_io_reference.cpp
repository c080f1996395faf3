// engine/io against the independent reference: the `safetensors` package's Rust reader and writer
// and numpy (tests/io/safetensors_reference.py). Both sides compute the values from the same
// formulas; neither reads the other's expectations.
#include <gtest/gtest.h>

#include "engine/io/npy.h"
#include "engine/io/safetensors.h"
#include "tests/io/test_support.h"

namespace koff::io::testing {
namespace {

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
};
// The script's TENSORS list, in the same (reference writer's) order.
const std::vector<Entry> kTensors = {
    {"i64", DType::i64, {4, 2}},    {"f64", DType::f64, {3, 5}},    {"empty_f32", DType::f32, {0, 3}},
    {"f32", DType::f32, {2, 3, 4}}, {"scalar_f32", DType::f32, {}}, {"i32", DType::i32, {9}},
    {"bf16", DType::bf16, {5, 3}},  {"f16", DType::f16, {7}},
};

class ReferenceTest : public ScratchDir {
 protected:
  int script(const std::string& mode) {
    return run_command(
        fmt::format("'{}' '{}/safetensors_reference.py' {} '{}'", python(), test_source_dir(), mode, dir_.string()));
  }
};

TEST_F(ReferenceTest, ReadsWhatTheReferenceWriterWrote) {
  ASSERT_EQ(script("write"), 0) << "the reference script failed; is safetensors installed in " << python() << "?";
  SafetensorsFile f(path("all_dtypes.safetensors"));
  EXPECT_EQ(f.metadata(), (Metadata{{"format", "pt"}, {"source", "safetensors reference"}}));
  for (const Entry& e : kTensors) {
    ASSERT_TRUE(f.has(e.name)) << e.name;
    EXPECT_TRUE(f.is_zero_copy(e.name)) << e.name;
    EXPECT_TRUE(same_bytes(f.tensor(e.name), reference_values(e.dtype, e.shape))) << e.name;
  }
  EXPECT_EQ(f.info("u8").dtype_name, "U8");
  EXPECT_EQ(f.info("flags").dtype_name, "BOOL");
  expect_error([&] { f.tensor("flags"); }, {"all_dtypes.safetensors", "'flags'", "BOOL"});

  // The sharded directory, through its index.
  Checkpoint ck(path("sharded"));
  EXPECT_TRUE(ck.is_sharded());
  EXPECT_EQ(ck.files().size(), 3u);
  EXPECT_EQ(ck.names().size(), kTensors.size());
  for (const Entry& e : kTensors) {
    EXPECT_TRUE(same_bytes(ck.tensor(e.name), reference_values(e.dtype, e.shape))) << e.name;
    if (is_floating(e.dtype)) {
      EXPECT_TRUE(same_bytes(ck.load(e.name, DType::f32), reference_values(DType::f32, e.shape))) << e.name;
    }
  }

  // numpy.save's files.
  EXPECT_TRUE(same_bytes(load_npy(path("reference_f32.npy")), reference_values(DType::f32, {2, 3, 4})));
  EXPECT_TRUE(same_bytes(load_npy(path("reference_i64.npy")), reference_values(DType::i64, {6})));
}

TEST_F(ReferenceTest, ConvertsEveryBf16AndF16BitPatternExactly) {
  ASSERT_EQ(script("write"), 0);
  SafetensorsFile f(path("all_bits.safetensors"));
  const Tensor b = f.load("bf16_all", DType::f32);
  const Tensor h = f.load("f16_all", DType::f32);
  const Tensor want_h = f.tensor("f16_all_as_f32");  // numpy's conversion
  ASSERT_EQ(b.numel(), 65536);
  const uint32_t* bb = static_cast<const uint32_t*>(b.raw_data());
  const uint32_t* hb = static_cast<const uint32_t*>(h.raw_data());
  const uint32_t* wb = static_cast<const uint32_t*>(want_h.raw_data());
  int bad_b = 0, bad_h = 0;
  for (uint32_t i = 0; i < 65536; ++i) {
    // bf16 is the top half of an f32: widening is a shift, NaN payloads included.
    bad_b += bb[i] != (i << 16);
    const float hv = h.data<float>()[i], wv = want_h.data<float>()[i];
    bad_h += std::isnan(wv) ? !std::isnan(hv) || (hb[i] >> 31) != (wb[i] >> 31) : hb[i] != wb[i];
  }
  EXPECT_EQ(bad_b, 0);
  EXPECT_EQ(bad_h, 0);
}

TEST_F(ReferenceTest, ReferenceReadsWhatWeWrote) {
  NamedTensors all;
  for (const Entry& e : kTensors) all.emplace_back(e.name, reference_values(e.dtype, e.shape));
  save_safetensors(path("ours_all.safetensors"), all, {{"format", "pt"}});
  save_safetensors(path("ours_meta.safetensors"), {{"x", reference_values(DType::f32, {2, 3})}},
                   {{"format", "pt"}, {"note", "grüße, 世界"}, {"empty", ""}});
  // 200-byte shards filled in the order given: [64 + 120 + 0 bytes] [96 + 4 + 36 + 30 + 14 bytes].
  save_sharded(path("ours_sharded"), all, 200);
  for (const Entry& e : kTensors)
    if (e.dtype != DType::bf16) save_npy(path("ours_" + e.name + ".npy"), reference_values(e.dtype, e.shape));
  EXPECT_EQ(script("check"), 0) << "see the script's message above";
}

}  // namespace
}  // namespace koff::io::testing
