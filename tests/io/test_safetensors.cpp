// safetensors reader and writer: round trips, zero-copy views, conversions, sharded checkpoints, and
// one clear error for every kind of malformed file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "engine/io/atomic_file.h"
#include "engine/io/safetensors.h"
#include "tests/io/test_support.h"

namespace koff::io::testing {
namespace {

const std::vector<std::pair<std::string, DType>> kAllDTypes = {{"f64", DType::f64},   {"f32", DType::f32},
                                                               {"bf16", DType::bf16}, {"f16", DType::f16},
                                                               {"i64", DType::i64},   {"i32", DType::i32}};

NamedTensors every_dtype() {
  NamedTensors out;
  int k = 1;
  for (const auto& [name, dtype] : kAllDTypes) out.emplace_back(name, reference_values(dtype, {k++, 3}));
  out.emplace_back("scalar", reference_values(DType::f32, {}));
  out.emplace_back("empty", reference_values(DType::bf16, {0, 4}));
  return out;
}

using SafetensorsTest = ScratchDir;

TEST_F(SafetensorsTest, RoundTripEveryDType) {
  const NamedTensors tensors = every_dtype();
  save_safetensors(path("a.safetensors"), tensors, {{"format", "pt"}, {"note", "grüße"}});
  SafetensorsFile f(path("a.safetensors"));
  EXPECT_EQ(f.metadata(), (Metadata{{"format", "pt"}, {"note", "grüße"}}));
  ASSERT_EQ(f.names().size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const TensorInfo& info = f.info(name);
    EXPECT_EQ(info.dtype, t.dtype()) << name;
    EXPECT_EQ(info.shape, t.shape()) << name;
    EXPECT_TRUE(same_bytes(f.tensor(name), t)) << name;
    EXPECT_TRUE(f.is_zero_copy(name)) << name << ": our writer aligns every tensor";
  }
  // Data ordered by descending element size, stable within a size: the reference writer's layout.
  EXPECT_EQ(f.names(), (std::vector<std::string>{"f64", "i64", "f32", "i32", "scalar", "bf16", "f16", "empty"}));
}

TEST_F(SafetensorsTest, NonContiguousInputIsWrittenRowMajor) {
  const Tensor base = reference_values(DType::f32, {3, 4});
  save_safetensors(path("t.safetensors"), {{"t", base.t()}, {"s", base.slice(1, 1, 4, 2)}});
  SafetensorsFile f(path("t.safetensors"));
  EXPECT_TRUE(same_bytes(f.tensor("t"), base.t().contiguous()));
  EXPECT_TRUE(same_bytes(f.tensor("s"), base.slice(1, 1, 4, 2).contiguous()));
}

TEST_F(SafetensorsTest, ZeroCopyViewOutlivesTheFileObject) {
  const Tensor w = reference_values(DType::f32, {4, 5});
  save_safetensors(path("w.safetensors"), {{"w", w}});
  Tensor view, copy;
  {
    SafetensorsFile f(path("w.safetensors"));
    view = f.tensor("w");
    copy = f.load("w", DType::f32);
    EXPECT_FALSE(view.same_storage(copy));
    EXPECT_EQ(f.tensor("w").raw_data(), view.raw_data()) << "views of one tensor share the mapped bytes";
  }
  // The SafetensorsFile is gone; the view's storage still holds the mapping.
  EXPECT_TRUE(same_bytes(view, w));
  // The mapping is private: writing into a view changes neither the file nor a fresh mapping.
  view.set({0, 0}, 123.0);
  EXPECT_EQ(view.at({0, 0}), 123.0);
  SafetensorsFile again(path("w.safetensors"));
  EXPECT_TRUE(same_bytes(again.tensor("w"), w));
  EXPECT_TRUE(same_bytes(copy, w));
}

TEST_F(SafetensorsTest, UnalignedDataIsCopiedIntoAlignedMemory) {
  // A header of 13 bytes puts the data at file offset 21: an f32 there is not 4-byte aligned.
  const Tensor v = reference_values(DType::f32, {3});
  std::string data(12, '\0');
  std::memcpy(data.data(), v.raw_data(), 12);
  std::string header = R"({"v":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  header += std::string((8 + 5 - header.size() % 8) % 8, ' ');  // header size = 5 mod 8
  ASSERT_EQ((8 + header.size()) % 4, 1u);
  write_bytes(path("u.safetensors"), safetensors_bytes(header, data));
  SafetensorsFile f(path("u.safetensors"));
  EXPECT_FALSE(f.is_zero_copy("v"));
  const Tensor t = f.tensor("v");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % 4, 0u);
  EXPECT_TRUE(same_bytes(t, v));
  EXPECT_TRUE(same_bytes(f.load("v", DType::f32), v));
}

TEST_F(SafetensorsTest, LoadConvertsFloatingDTypes) {
  // bf16 -> f32 is exact: every value of the formula round-trips.
  const Tensor b = reference_values(DType::bf16, {10});
  const Tensor h = reference_values(DType::f16, {10});
  const Tensor x = Tensor::from_vector<float>({1.0f, 1.00390625f, 1.01171875f, -3.0e-39f}, {4});
  save_safetensors(path("c.safetensors"), {{"b", b}, {"h", h}, {"x", x}, {"i", reference_values(DType::i32, {4})}});
  SafetensorsFile f(path("c.safetensors"));
  const Tensor b32 = f.load("b", DType::f32), h32 = f.load("h", DType::f32);
  EXPECT_TRUE(same_bytes(b32, reference_values(DType::f32, {10})));
  EXPECT_TRUE(same_bytes(h32, reference_values(DType::f32, {10})));
  EXPECT_TRUE(same_bytes(f.load("b", DType::f64), reference_values(DType::f64, {10})));
  // f32 -> bf16 rounds to nearest even: 1 + 2^-8 is a tie and goes to 1; 1 + 3*2^-8 goes up to 1 + 2^-6.
  const Tensor xb = f.load("x", DType::bf16);
  EXPECT_EQ(xb.data<bf16>()[0].bits, 0x3f80);
  EXPECT_EQ(xb.data<bf16>()[1].bits, 0x3f80);
  EXPECT_EQ(xb.data<bf16>()[2].bits, 0x3f82);
  // Same dtype: still a fresh copy, never a view of the mapping.
  EXPECT_FALSE(f.load("b", DType::bf16).same_storage(f.tensor("b")));
  // Integers load as integers only (widening allowed).
  EXPECT_TRUE(same_bytes(f.load("i", DType::i64), reference_values(DType::i32, {4}).to(DType::i64)));
  expect_error([&] { f.load("i", DType::f32); }, {"c.safetensors", "'i'", "i32", "cannot be loaded as f32"});
  expect_error([&] { f.load("b", DType::i32); }, {"c.safetensors", "'b'", "bf16", "cannot be loaded as i32"});
  expect_error([&] { f.tensor("nope"); }, {"c.safetensors", "no tensor named 'nope'"});
}

TEST_F(SafetensorsTest, EmptyFileAndFromBytes) {
  save_safetensors(path("empty.safetensors"), {});
  const std::string bytes = read_bytes(path("empty.safetensors"));
  EXPECT_EQ(bytes, le64(8) + "{}      ");  // the reference writer's bytes for an empty dict
  SafetensorsFile f(path("empty.safetensors"));
  EXPECT_TRUE(f.names().empty());
  EXPECT_TRUE(f.metadata().empty());

  save_safetensors(path("one.safetensors"), {{"x", reference_values(DType::f16, {2, 2})}});
  SafetensorsFile m = SafetensorsFile::from_bytes(read_bytes(path("one.safetensors")), "embedded:one");
  EXPECT_EQ(m.path(), "embedded:one");
  EXPECT_TRUE(same_bytes(m.tensor("x"), reference_values(DType::f16, {2, 2})));
}

TEST_F(SafetensorsTest, WriterRejectsBadInput) {
  const Tensor t = reference_values(DType::f32, {2});
  expect_error(
      [&] {
        save_safetensors(path("d.safetensors"), {{"a", t}, {"a", t}});
      },
      {"d.safetensors", "'a' given twice"});
  expect_error([&] { save_safetensors(path("d.safetensors"), {{"__metadata__", t}}); }, {"d.safetensors", "reserved"});
  expect_error([&] { save_safetensors(path("d.safetensors"), {{"u", Tensor()}}); }, {"d.safetensors", "'u'"});
  EXPECT_FALSE(fs::exists(path("d.safetensors")));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 0) << "no temporary left";
}

TEST_F(SafetensorsTest, AtomicFileLeavesOldContentsUntilCommit) {
  write_bytes(path("f.txt"), "old");
  {
    AtomicFile f(path("f.txt"));
    f.write("new contents");
    EXPECT_TRUE(fs::exists(f.temporary_path()));
    EXPECT_EQ(read_bytes(path("f.txt")), "old");
    // Dropped without commit (as when an exception unwinds): the temporary goes, the old file stays.
  }
  EXPECT_EQ(read_bytes(path("f.txt")), "old");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  write_file_atomic(path("f.txt"), "new");
  EXPECT_EQ(read_bytes(path("f.txt")), "new");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  expect_error([&] { AtomicFile g(path("no/such/dir/f.txt")); }, {"no/such/dir/f.txt", "cannot create"});
}

// ---- sharded checkpoints ------------------------------------------------------------------------

TEST_F(SafetensorsTest, ShardedRoundTripAsHuggingFaceLaysItOut) {
  NamedTensors tensors;
  for (int i = 0; i < 5; ++i)
    tensors.emplace_back(fmt::format("layer.{}.w", i), reference_values(i % 2 ? DType::bf16 : DType::f32, {4, 8}));
  // 128 bytes (f32) or 64 (bf16) each; 200-byte shards: [f32 + bf16], [f32 + bf16], [f32].
  save_sharded(dir_, tensors, 200);
  EXPECT_TRUE(fs::exists(path("model-00001-of-00003.safetensors")));
  EXPECT_TRUE(fs::exists(path("model-00003-of-00003.safetensors")));
  const auto index = nlohmann::json::parse(read_bytes(path("model.safetensors.index.json")));
  EXPECT_EQ(index["metadata"]["total_size"], 3 * 128 + 2 * 64);
  EXPECT_EQ(index["weight_map"]["layer.2.w"], "model-00002-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.4.w"], "model-00003-of-00003.safetensors");

  Checkpoint ck(dir_);
  EXPECT_TRUE(ck.is_sharded());
  EXPECT_EQ(ck.names().size(), 5u);
  for (const auto& [name, t] : tensors) {
    EXPECT_TRUE(ck.has(name));
    EXPECT_TRUE(same_bytes(ck.tensor(name), t)) << name;
    EXPECT_TRUE(same_bytes(ck.load(name, DType::f32), t.to(DType::f32))) << name;
    EXPECT_EQ(ck.file_of(name).metadata(), (Metadata{{"format", "pt"}}));
  }
  EXPECT_FALSE(ck.has("layer.5.w"));
  expect_error([&] { ck.load("layer.5.w", DType::f32); }, {dir_.string(), "no tensor named 'layer.5.w'"});

  // Saving again as one file removes the old index and shards, so nothing stale is read back.
  save_sharded(dir_, {tensors[0]}, 1 << 20);
  EXPECT_FALSE(fs::exists(path("model.safetensors.index.json")));
  EXPECT_FALSE(fs::exists(path("model-00001-of-00003.safetensors")));
  Checkpoint one(dir_);
  EXPECT_FALSE(one.is_sharded());
  EXPECT_EQ(one.names(), std::vector<std::string>{"layer.0.w"});
  // A single file or an index can be named directly too.
  EXPECT_EQ(Checkpoint(path("model.safetensors")).names(), std::vector<std::string>{"layer.0.w"});
}

TEST_F(SafetensorsTest, ShardTooSmallForATensorGivesItItsOwnShard) {
  save_sharded(dir_, {{"a", reference_values(DType::f32, {100})}, {"b", reference_values(DType::f32, {1})}}, 16);
  Checkpoint ck(path("model.safetensors.index.json"));
  EXPECT_EQ(ck.files().size(), 2u);
  EXPECT_EQ(ck.file_of("a").names(), std::vector<std::string>{"a"});
}

TEST_F(SafetensorsTest, CheckpointErrorsNameTheFileAndListEveryProblem) {
  expect_error([&] { Checkpoint ck(dir_); }, {dir_.string(), "no model.safetensors"});
  expect_error([&] { Checkpoint ck(path("missing")); }, {"missing", "no such file"});

  save_safetensors(path("model-00001-of-00002.safetensors"), {{"a", reference_values(DType::f32, {2})}});
  save_safetensors(path("model-00002-of-00002.safetensors"), {{"b", reference_values(DType::f32, {2})}});
  write_bytes(path("model.safetensors.index.json"),
              R"({"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                  "c": "model-00002-of-00002.safetensors"}})");
  expect_error([&] { Checkpoint ck(dir_); },
               {"model.safetensors.index.json", "2 tensor(s)", "b (in model-00001-of-00002.safetensors)",
                "c (in model-00002-of-00002.safetensors)"});

  write_bytes(path("model.safetensors.index.json"), R"({"weight_map": {"a": "../model-00001-of-00002.safetensors"}})");
  expect_error([&] { Checkpoint ck(dir_); }, {"model.safetensors.index.json", "weight_map['a']", "not a file name"});
  write_bytes(path("model.safetensors.index.json"), R"({"weights": {}})");
  expect_error([&] { Checkpoint ck(dir_); }, {"model.safetensors.index.json", "no 'weight_map'"});
  write_bytes(path("model.safetensors.index.json"), R"({"weight_map": )");
  expect_error([&] { Checkpoint ck(dir_); }, {"model.safetensors.index.json", "not valid JSON"});
  write_bytes(path("model.safetensors.index.json"), R"({"weight_map": {"a": "model-00009-of-00009.safetensors"}})");
  expect_error([&] { Checkpoint ck(dir_); }, {"model-00009-of-00009.safetensors", "cannot open"});
}

// ---- malformed files: each gives one koff::Error naming the file and the problem ----------------

class MalformedTest : public ScratchDir {
 protected:
  // Writes `bytes` and expects opening it to fail with a message naming the file and `problem`.
  void expect_rejected(const std::string& bytes, const std::vector<std::string>& problem) {
    const fs::path p = path(fmt::format("bad{}.safetensors", count_++));
    write_bytes(p, bytes);
    std::vector<std::string> parts = problem;
    parts.push_back(p.string());
    expect_error([&] { SafetensorsFile f(p); }, parts);
    // The in-memory parser says the same.
    std::vector<std::string> mem_parts = problem;
    mem_parts.push_back("mem:x");
    expect_error([&] { SafetensorsFile::from_bytes(bytes, "mem:x"); }, mem_parts);
  }
  int count_ = 0;
};

TEST_F(MalformedTest, TruncatedAtEveryKindOfCutPoint) {
  save_safetensors(path("good.safetensors"),
                   {{"a", reference_values(DType::f32, {4, 4})}, {"b", reference_values(DType::bf16, {3})}});
  const std::string good = read_bytes(path("good.safetensors"));
  uint64_t header_len = 0;
  std::memcpy(&header_len, good.data(), 8);
  const size_t data_start = 8 + header_len;
  for (size_t cut : {size_t(0), size_t(1), size_t(7), size_t(8), size_t(9), size_t(8 + header_len / 2), data_start - 1,
                     data_start, data_start + 1, data_start + 64, good.size() - 1}) {
    SCOPED_TRACE(fmt::format("cut at {} of {}", cut, good.size()));
    expect_rejected(good.substr(0, cut), {"truncated"});
  }
}

TEST_F(MalformedTest, HeaderLengthLies) {
  const std::string h = R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  expect_rejected(safetensors_bytes(h, "abcd", 1000), {"truncated", "header length says 1000"});
  expect_rejected(safetensors_bytes(h, "abcd", uint64_t(1) << 62), {"header length", "100 MB"});
  expect_rejected(safetensors_bytes(h, "abcd", ~uint64_t(0)), {"header length", "100 MB"});
  expect_rejected(safetensors_bytes(h, "abcd", 0), {"does not start with '{'"});
}

TEST_F(MalformedTest, HeaderIsNotAJsonObject) {
  expect_rejected(safetensors_bytes("{not json}", ""), {"not valid JSON"});
  expect_rejected(safetensors_bytes("[1, 2, 3]", ""), {"does not start with '{'"});
  expect_rejected(safetensors_bytes("{\"a\": {}} trailing", ""), {"not valid JSON"});
  expect_rejected(safetensors_bytes("{\"a\": \"\xff\xfe\"}", ""), {"not valid JSON"});
  expect_rejected(safetensors_bytes("{\"a\": 1}", ""), {"tensor 'a'", "must be an object"});
  expect_rejected(safetensors_bytes("{\"a\": [[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]}", ""), {"nests"});
}

TEST_F(MalformedTest, OffsetsThatLie) {
  const std::string data(16, '\x01');
  // Beyond the data buffer.
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,1000]}})", data),
                  {"tensor 'a'", "ends at byte 1000", "only 16 bytes"});
  // Size that disagrees with dtype and shape.
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", data),
                  {"tensor 'a'", "16 bytes", "need 12 bytes"});
  // Overlapping tensors.
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},
                                        "b":{"dtype":"F32","shape":[3],"data_offsets":[4,16]}})",
                                    data),
                  {"tensor 'b'", "overlaps tensor 'a'"});
  // A hole, and trailing bytes: unindexed payload the reference rejects too.
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},
                                        "b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                    data),
                  {"bytes [4, 8)", "belong to no tensor"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data),
                  {"16 bytes", "end at byte 8", "trailing"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", data),
                  {"tensor 'a'", "begin after end"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
                                        "a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
                                    data),
                  {"names tensor 'a' twice"});
  // A shape whose element count overflows cannot sneak past the size check.
  expect_rejected(
      safetensors_bytes(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,16]}})", data),
      {"tensor 'a'", "overflows"});
}

TEST_F(MalformedTest, MalformedEntries) {
  const std::string data(4, '\0');
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}})", data),
                  {"tensor 'a'", "unknown dtype 'F31'"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", data),
                  {"tensor 'a'", "dtype that is not a string"});
  expect_rejected(safetensors_bytes(R"({"a":{"shape":[1],"data_offsets":[0,4]}})", data), {"tensor 'a'", "'dtype'"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", data),
                  {"tensor 'a' shape[0]", "non-negative integer"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}})", data),
                  {"tensor 'a' shape[0]", "a float"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":1,"data_offsets":[0,4]}})", data),
                  {"tensor 'a'", "shape that is not an array"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", data),
                  {"tensor 'a'", "data_offsets must be [begin, end]"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,-4]}})", data),
                  {"tensor 'a' data_offsets[1]", "non-negative"});
  expect_rejected(safetensors_bytes(R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,4]}})", data),
                  {"tensor 'a'", "whole bytes"});
  expect_rejected(
      safetensors_bytes(R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data),
      {"__metadata__", "'k'"});
  expect_rejected(
      safetensors_bytes(R"({"__metadata__":[],"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data),
      {"__metadata__", "must be an object"});
}

TEST_F(MalformedTest, DTypesKoffCannotRepresentAreListedButNotLoaded) {
  const std::string h = R"({"m":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},
                            "p":{"dtype":"F4","shape":[4],"data_offsets":[2,4]},
                            "q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[4,8]}})";
  write_bytes(path("u8.safetensors"), safetensors_bytes(h, std::string(8, '\x07')));
  SafetensorsFile f(path("u8.safetensors"));
  EXPECT_EQ(f.names(), (std::vector<std::string>{"m", "p", "q"}));
  EXPECT_EQ(f.info("m").dtype_name, "U8");
  EXPECT_FALSE(f.info("m").dtype.has_value());
  expect_error([&] { f.tensor("m"); }, {"u8.safetensors", "tensor 'm'", "U8", "cannot represent"});
  expect_error([&] { f.load("q", DType::f32); }, {"u8.safetensors", "tensor 'q'", "F8_E4M3", "cannot represent"});
}

TEST_F(MalformedTest, NotARegularFile) {
  expect_error([&] { SafetensorsFile f(dir_); }, {dir_.string(), "not a regular file"});
  expect_error([&] { SafetensorsFile f(path("absent.safetensors")); }, {"absent.safetensors", "cannot open"});
}

}  // namespace
}  // namespace koff::io::testing
