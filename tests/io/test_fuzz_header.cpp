// A bounded, deterministic fuzz run over the safetensors header parser: 20000 mutations (byte flips,
// truncations, insertions, deletions, digit and offset edits, splices) of a seed corpus of valid
// files. Each mutant must either open, with every tensor then readable and within its buffer, or be
// refused with koff::Error naming the source; any other exception, crash or sanitizer report is a bug.
// Run under the `sanitize` preset this catches out-of-bounds reads; fuzz_safetensors.cpp is the
// libFuzzer version of the same property (run_fuzz.sh).
#include <gtest/gtest.h>

#include <random>

#include "engine/io/safetensors.h"
#include "tests/io/test_support.h"

namespace koff::io::testing {
namespace {

std::vector<std::string> seed_corpus(const fs::path& dir) {
  std::vector<std::string> seeds;
  auto add = [&](const NamedTensors& tensors, const Metadata& meta) {
    save_safetensors(dir / "seed.safetensors", tensors, meta);
    seeds.push_back(read_bytes(dir / "seed.safetensors"));
  };
  add({}, {});
  add({{"a", reference_values(DType::f32, {2, 2})}}, {});
  add({{"w", reference_values(DType::bf16, {3, 5})},
       {"b", reference_values(DType::f64, {2})},
       {"s", reference_values(DType::i32, {})},
       {"z", reference_values(DType::f16, {0, 7})}},
      {{"format", "pt"}, {"k", "v"}});
  add({{"model.layers.0.self_attn.q_proj.weight", reference_values(DType::bf16, {4, 4})},
       {"model.layers.0.self_attn.k_proj.weight", reference_values(DType::bf16, {2, 4})},
       {"i", reference_values(DType::i64, {3})}},
      {{"format", "pt"}});
  // Foreign dtypes, as other writers produce them.
  seeds.push_back(safetensors_bytes(R"({"m":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                    R"("p":{"dtype":"F4","shape":[4],"data_offsets":[2,4]}})",
                                    "abcd"));
  return seeds;
}

std::string mutate(std::string s, std::mt19937_64& rng, const std::vector<std::string>& seeds) {
  auto pick = [&](size_t n) { return n == 0 ? size_t(0) : static_cast<size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    switch (rng() % 8) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // truncate
        s.resize(pick(s.size() + 1));
        break;
      case 2:  // insert a random byte or a JSON-significant one
        s.insert(pick(s.size() + 1), 1, "{}[]\":,0123456789-eE. \\"[rng() % 24]);
        break;
      case 3:  // delete a run
        if (!s.empty()) {
          const size_t at = pick(s.size());
          s.erase(at, 1 + pick(8));
        }
        break;
      case 4: {  // change a digit (offsets, shapes, the length prefix)
        std::vector<size_t> digits;
        for (size_t i = 8; i < s.size(); ++i)
          if (s[i] >= '0' && s[i] <= '9') digits.push_back(i);
        if (!digits.empty()) s[digits[pick(digits.size())]] = static_cast<char>('0' + rng() % 10);
        break;
      }
      case 5: {  // rewrite the length prefix near its true value
        if (s.size() >= 8) {
          uint64_t len = 0;
          std::memcpy(&len, s.data(), 8);
          len += static_cast<uint64_t>(static_cast<int64_t>(rng() % 33) - 16);
          if (rng() % 16 == 0) len = rng();
          std::memcpy(s.data(), &len, 8);
        }
        break;
      }
      case 6: {  // splice in a piece of another seed
        const std::string& other = seeds[pick(seeds.size())];
        const size_t from = pick(other.size()), n = pick(other.size() - from + 1);
        s.insert(pick(s.size() + 1), other.substr(from, n));
        break;
      }
      case 7:  // a large number where a digit was
        for (size_t i = 8; i < s.size(); ++i)
          if (s[i] >= '0' && s[i] <= '9' && rng() % 4 == 0) {
            s.replace(i, 1, std::to_string(rng()));
            break;
          }
        break;
    }
  }
  return s;
}

using HeaderFuzz = ScratchDir;

TEST_F(HeaderFuzz, TwentyThousandMutantsOpenOrGiveOneClearError) {
  const std::vector<std::string> seeds = seed_corpus(dir_);
  std::mt19937_64 rng(20240611);
  int opened = 0, refused = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    const std::string input = mutate(seeds[iter % seeds.size()], rng, seeds);
    try {
      const SafetensorsFile f = SafetensorsFile::from_bytes(input, "fuzz-input");
      // Accepted: every representable tensor must be readable, and convertible.
      for (const std::string& name : f.names()) {
        const TensorInfo& info = f.info(name);
        ASSERT_LE(info.end, f.data_size());
        if (!info.dtype) continue;
        const Tensor t = f.tensor(name);
        ASSERT_EQ(t.nbytes(), info.nbytes());
        if (is_floating(*info.dtype)) (void)f.load(name, DType::f32);
      }
      ++opened;
    } catch (const koff::Error& e) {
      ASSERT_NE(std::string(e.what()).find("fuzz-input"), std::string::npos) << e.what();
      ++refused;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iter << ": a non-koff exception: " << e.what();
    }
  }
  // Both outcomes occur: the mutations neither all break nor all spare the files.
  EXPECT_GT(opened, 100);
  EXPECT_GT(refused, 1000);
  std::cout << "opened " << opened << ", refused " << refused << "\n";
}

}  // namespace
}  // namespace koff::io::testing
