// Data parallelism (engine/dist, the trainer's data-parallel path).
//
// In-process: the TCP star with one thread per rank (sums checked against hand-computed values, a
// dead peer and a mismatched collective fail at once with the rank named, a silent peer times out),
// autograd's grad_ready_hook, and GradReducer (the summed gradients equal the sum of the ranks'
// gradients; buckets start during the backward from the second step on).
// Multi-process (mpirun, the koff binary): 2 ranks train what one process trains with the same
// global batch (trainables within 1e-5 relative after 20 steps, masks identical), over MPI and over
// the torchrun-style TCP bootstrap; a killed rank and a stopped rank end the job in bounded time with
// a message that says so.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "autograd/functions.h"
#include "engine/dist/communicator.h"
#include "engine/dist/grad_reducer.h"
#include "engine/dist/host_communicators.h"
#include "engine/dist/staged_communicator.h"
#include "engine/io/safetensors.h"
#include "engine/ops/emulated_device.h"
#ifdef KOFF_HAVE_NCCL  // the CUDA backend built with NCCL (CMakeLists.txt: NCCL is optional)
#include "cuda/device.h"
#include "engine/dist/nccl_communicator.h"
#endif

namespace {

namespace fs = std::filesystem;
namespace ag = koff::autograd;
using koff::Tensor;
using koff::dist::Communicator;
using koff::dist::ReduceType;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

// One TCP communicator per rank, created concurrently (rank 0 waits for the others in its constructor).
std::vector<std::unique_ptr<Communicator>> tcp_group(int world) {
  const int port = free_port();
  std::vector<std::unique_ptr<Communicator>> comms(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back(
        [&, r] { comms[static_cast<size_t>(r)] = koff::dist::make_tcp(r, world, r, "127.0.0.1", port); });
  for (auto& t : threads) t.join();
  return comms;
}

// Runs fn(rank) on one thread per rank.
void on_ranks(int world, const std::function<void(int)>& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) threads.emplace_back(fn, r);
  for (auto& t : threads) t.join();
}

struct ScopedEnv {
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    ::setenv(name, value, 1);
  }
  ~ScopedEnv() {
    if (had_)
      ::setenv(name_, old_.c_str(), 1);
    else
      ::unsetenv(name_);
  }
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(DistTcp, SumsBroadcastsAndAgreesBitForBit) {
  const int W = 3;
  auto comms = tcp_group(W);
  std::vector<std::vector<float>> f(W);
  std::vector<std::vector<double>> d(W);
  std::vector<int64_t> bcast(W, -1);
  on_ranks(W, [&](int r) {
    Communicator& c = *comms[static_cast<size_t>(r)];
    EXPECT_EQ(c.rank(), r);
    EXPECT_EQ(c.world_size(), W);
    // rank r holds r+1, 10(r+1), 0.1: sums 6, 60, 0.1+0.1+0.1 (summed in rank order on rank 0).
    f[r] = {float(r + 1), float(10 * (r + 1)), 0.1f};
    auto work = c.all_reduce_sum_async(f[r].data(), 3, ReduceType::f32);
    d[r] = {0.5 * r, -1.0};
    c.all_reduce_sum(d[r].data(), 2, ReduceType::f64);
    work->wait();
    int64_t v = r == 1 ? 4242 : 0;
    c.broadcast(&v, sizeof v, 1);
    bcast[r] = v;
    c.barrier();
  });
  const float tenth3 = (0.1f + 0.1f) + 0.1f;
  for (int r = 0; r < W; ++r) {
    EXPECT_EQ(f[r], (std::vector<float>{6.f, 60.f, tenth3}));
    EXPECT_EQ(d[r], (std::vector<double>{1.5, -3.0}));
    EXPECT_EQ(bcast[r], 4242);
  }
}

TEST(DistTcp, ADeadPeerIsNamedAtOnce) {
  auto comms = tcp_group(2);
  comms[1].reset();  // rank 1 "dies": its socket closes
  float x = 1;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    comms[0]->all_reduce_sum(&x, 1, ReduceType::f32);
    FAIL() << "the all-reduce with a dead rank returned";
  } catch (const koff::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0/2 (tcp): all-reduce of 1 f32 values: the connection to rank 1 closed"),
              std::string::npos)
        << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
  EXPECT_THROW(comms[0]->barrier(), koff::Error);  // broken for good
}

TEST(DistTcp, MismatchedCollectivesAreNamed) {
  auto comms = tcp_group(2);
  std::string error;
  on_ranks(2, [&](int r) {
    std::vector<float> v(r == 0 ? 4 : 5, 1.f);
    try {
      comms[static_cast<size_t>(r)]->all_reduce_sum(v.data(), static_cast<int64_t>(v.size()), ReduceType::f32);
    } catch (const koff::Error& e) {
      if (r == 0) error = e.what();
    }
    if (r == 0) comms[0].reset();  // lets rank 1 out of its recv
  });
  EXPECT_NE(
      error.find("rank 1 issued collective #0 (all-reduce f32 of 20 bytes) where rank 0 issued #0 (all-reduce f32 "
                 "of 16 bytes)"),
      std::string::npos)
      << error;
}

TEST(DistTcp, ASilentPeerTimesOut) {
  ScopedEnv timeout("KOFF_DIST_TIMEOUT", "1");
  auto comms = tcp_group(2);
  float x = 1;  // rank 1 never joins
  const auto t0 = std::chrono::steady_clock::now();
  try {
    comms[0]->all_reduce_sum(&x, 1, ReduceType::f32);
    FAIL() << "returned without rank 1";
  } catch (const koff::Error& e) {
    EXPECT_NE(std::string(e.what()).find("rank 0/2 (tcp): all-reduce of 1 f32 values did not complete within 1 s "
                                         "(KOFF_DIST_TIMEOUT): another rank died or hangs"),
              std::string::npos)
        << e.what();
  }
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(waited, 1.0);
  EXPECT_LT(waited, 5.0);
  comms[1].reset();  // wakes rank 0's communication thread (connection closed) before rank 0 goes
  comms[0].reset();
}

TEST(DistLaunch, ReadsTorchrunAndSlurmConventions) {
  {
    ScopedEnv a("RANK", "3"), b("WORLD_SIZE", "8"), c("LOCAL_RANK", "1"), d("MASTER_ADDR", "node7"),
        e("MASTER_PORT", "1234");
    const auto info = koff::dist::detect_launch();
    EXPECT_EQ(info.launcher, "torchrun");
    EXPECT_EQ(info.rank, 3);
    EXPECT_EQ(info.world_size, 8);
    EXPECT_EQ(info.local_rank, 1);
    EXPECT_EQ(info.master_addr, "node7");
    EXPECT_EQ(info.master_port, 1234);
  }
  if (!std::getenv("OMPI_COMM_WORLD_SIZE") && !std::getenv("RANK") && !std::getenv("PMIX_RANK")) {
    ScopedEnv a("SLURM_PROCID", "5"), b("SLURM_NTASKS", "32"), c("SLURM_LOCALID", "5");
    try {  // several tasks and no rendezvous: each would train alone
      (void)koff::dist::detect_launch();
      ADD_FAILURE() << "srun without MASTER_ADDR accepted";
    } catch (const koff::Error& e) {
      EXPECT_NE(std::string(e.what()).find("started by srun as task 5 of 32 but MASTER_ADDR is not set"),
                std::string::npos)
          << e.what();
    }
    ScopedEnv d("MASTER_ADDR", "n1");
    const auto info = koff::dist::detect_launch();
    EXPECT_EQ(info.launcher, "slurm");
    EXPECT_EQ(info.rank, 5);
    EXPECT_EQ(info.world_size, 32);
    EXPECT_EQ(info.master_port, 29500);
  }
  {
    ScopedEnv a("RANK", "2"), b("WORLD_SIZE", "2"), d("MASTER_ADDR", "x");
    EXPECT_THROW(koff::dist::detect_launch(), koff::Error);  // rank outside the world
  }
}

// The hook fires once per leaf, when its gradient is final: y = a*b + a*c + b, hooks see a's and b's
// complete gradients (b + c and a + 1), and a leaf no gradient reaches still gets its call.
TEST(DistAutograd, GradReadyHookSeesTheFinalGradient) {
  ag::Variable a(Tensor::from_vector<float>({2.f}, {1}), true, "a"),
      b(Tensor::from_vector<float>({3.f}, {1}), true, "b"), c(Tensor::from_vector<float>({5.f}, {1}), false, "c");
  std::vector<std::pair<std::string, float>> seen;
  for (auto* v : {&a, &b})
    v->impl()->grad_ready_hook = [&seen, v] { seen.emplace_back(v->name(), v->grad().to_vector<float>()[0]); };
  ag::Variable y = ag::add(ag::add(ag::mul(a, b), ag::mul(a, c)), b);
  ag::sum(y).backward();
  ASSERT_EQ(seen.size(), 2u);
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen[0], (std::pair<std::string, float>{"a", 8.f}));  // b + c
  EXPECT_EQ(seen[1], (std::pair<std::string, float>{"b", 3.f}));  // a + 1
}

// Two ranks, several layers of trainables; rank r's loss is sum_l w_r * sum(x_l^2 / 2) so rank r's
// gradient of x_l is w_r * x_l and the reduced one (w_0 + w_1) * x_l, exactly (small integers).
// `staged`: the trainables on the (emulated) GPU, cuda:r, and the buckets reduced by the host-staged
// communicator over the TCP star, the order broadcast on the TCP star itself (GPU ranks without NCCL).
void reducer_sums_in_buckets(bool staged) {
  auto comms = tcp_group(2);
  std::vector<std::vector<float>> results(2);
  std::vector<size_t> buckets(2), early(2);
  on_ranks(2, [&](int r) {
    Communicator& host = *comms[static_cast<size_t>(r)];
    const koff::Device device = staged ? koff::Device::cuda(r) : koff::Device::cpu();
    std::unique_ptr<Communicator> on_device;
    if (staged) on_device = koff::dist::make_host_staged(host, device);
    std::vector<ag::Variable> xs;
    for (int l = 0; l < 6; ++l)
      xs.emplace_back(Tensor::full({64}, l + 1, koff::DType::f32, device), true, fmt::format("x{}", l));
    koff::dist::GradReducer reducer(staged ? *on_device : host, xs, 2 * 64 * sizeof(float), &host);  // 2 per bucket
    const double w = r == 0 ? 1.0 : 2.0;
    for (int step = 0; step < 2; ++step) {
      for (auto& x : xs) x.zero_grad();
      // A chain, so the gradients become ready one layer after another (last layer first).
      ag::Variable h = ag::scale(ag::dot(xs[0], xs[0]), 0.5 * w);
      for (int l = 1; l < 6; ++l) h = ag::add(h, ag::scale(ag::dot(xs[l], xs[l]), 0.5 * w));
      reducer.arm();
      h.backward();
      reducer.finish();
    }
    for (auto& x : xs) {
      EXPECT_EQ(x.grad().device(), device);
      results[r].push_back(x.grad().to(koff::Device::cpu()).to_vector<float>()[7]);
    }
    buckets[r] = reducer.num_buckets(), early[r] = reducer.launched_during_backward();
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(results[r], (std::vector<float>{3, 6, 9, 12, 15, 18}));
    EXPECT_EQ(buckets[r], 3u);
    EXPECT_GE(early[r], 2u);  // the buckets of the later layers went out before the backward ended
  }
}

TEST(DistReducer, SumsGradientsInBucketsDuringTheBackward) { reducer_sums_in_buckets(false); }

// The GPU ranks' path without NCCL, on the device emulator (engine/ops/emulated_device.h): the same
// GradReducer code, buckets on the device, copied to the host and back by the staged communicator.
TEST(DistReducer, HostStagedSumsDeviceGradients) {
  if (!koff::register_emulated_cuda()) GTEST_SKIP() << "a real GPU is registered: the emulator never runs over it";
  reducer_sums_in_buckets(true);
}

// A device communicator refuses host tensors, and a reducer refuses trainables on another device.
TEST(DistReducer, DeviceMismatchesAreRefused) {
  if (!koff::register_emulated_cuda()) GTEST_SKIP() << "a real GPU is registered";
  auto single = koff::dist::make_single();
  auto staged = koff::dist::make_host_staged(*single, koff::Device::cuda(0));
  EXPECT_EQ(staged->backend(), "single+staged");
  Tensor host = Tensor::zeros({4});
  try {
    staged->all_reduce_sum(host);
    ADD_FAILURE() << "a host tensor was reduced by a device communicator";
  } catch (const koff::Error& e) {
    EXPECT_NE(std::string(e.what()).find("this communicator's buffers are on cuda:0"), std::string::npos) << e.what();
  }
  std::vector<ag::Variable> xs{ag::Variable(Tensor::zeros({4}), true, "x")};
  try {
    koff::dist::GradReducer reducer(*staged, xs, 1024, single.get());
    ADD_FAILURE() << "a reducer took a cpu trainable for a cuda:0 communicator";
  } catch (const koff::Error& e) {
    EXPECT_NE(std::string(e.what()).find("trainable 'x' is on cpu"), std::string::npos) << e.what();
  }
}

#ifdef KOFF_HAVE_NCCL
// NCCL on GPU buffers: each GPU a rank (threads of this process), the unique id through a file.
// Rank r holds r+1 in every element; the sum is W(W+1)/2. Skips without a GPU.
TEST(DistNccl, SumsGpuBuffers) {
  const int gpus = koff::cuda::device_count();
  if (gpus == 0) GTEST_SKIP() << koff::cuda::describe_devices();
  ASSERT_TRUE(koff::cuda::register_if_available());
  const int W = std::min(gpus, 2);
  const fs::path id = fs::temp_directory_path() / fmt::format("koff_nccl_id_{}", ::getpid());
  fs::remove(id);
  std::vector<std::vector<float>> got(static_cast<size_t>(W));
  std::vector<std::string> errors(static_cast<size_t>(W));
  on_ranks(W, [&](int r) {
    try {
      auto comm = koff::cuda::make_nccl_from_file(r, W, r, id.string());
      Tensor t = Tensor::full({1000}, r + 1, koff::DType::f32).to(koff::Device::cuda(r));
      comm->all_reduce_sum(t);
      got[static_cast<size_t>(r)] = t.to(koff::Device::cpu()).to_vector<float>();
      comm->barrier();
    } catch (const std::exception& e) {
      errors[static_cast<size_t>(r)] = e.what();
    }
  });
  fs::remove(id);
  for (int r = 0; r < W; ++r) {
    ASSERT_EQ(errors[static_cast<size_t>(r)], "");
    EXPECT_EQ(got[static_cast<size_t>(r)], std::vector<float>(1000, float(W * (W + 1) / 2)));
  }
}
#endif

// ---------------------------------------------------------------------------------------------
// Multi-process: the koff binary under mpirun and under the torchrun convention.

const fs::path kWork = KOFF_TEST_WORK;

void allow_mpirun_as_root() {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  ::setenv("OMP_NUM_THREADS", "1", 1);  // 2 ranks on 2 cores
  // Ranks waiting in a collective yield the core instead of spinning on it.
  ::setenv("OMPI_MCA_mpi_yield_when_idle", "1", 1);
  // Sanitizer builds: MPI's allocations at exit are not ours to fix.
  std::string asan = std::getenv("ASAN_OPTIONS") ? std::getenv("ASAN_OPTIONS") : "";
  ::setenv("ASAN_OPTIONS", (asan.empty() ? "detect_leaks=0" : asan + ":detect_leaks=0").c_str(), 1);
}

std::string read_text(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

// Starts argv with `env` added, stdout and stderr into `log`.
pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::pair<std::string, std::string>>& env,
            const fs::path& log) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(fd, 1), ::dup2(fd, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

// Waits up to `seconds`; returns the wait status, or -1 when it is still running.
int wait_for(pid_t pid, double seconds) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid, &status, WNOHANG) == pid) return status;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return -1;
}

// A fresh directory for one test (ctest may run the tests of this file in parallel), holding two
// small domains cut from the corpus (the whole corpus would take most of the test tokenizing).
fs::path fresh_dir(const std::string& test) {
  const fs::path dir = kWork / test, data = dir / "data";
  fs::remove_all(dir);
  for (const char* lang : {"en", "de"}) {
    fs::create_directories(data / lang);
    for (auto [split, lines] : {std::pair{"train", 300}, std::pair{"valid", 40}}) {
      std::ifstream in(fs::path(KOFF_SOURCE_DIR) / "data" / "corpus" / lang / (std::string(split) + ".txt"));
      std::ofstream out(data / lang / (std::string(split) + ".txt"));
      std::string line;
      for (int i = 0; i < lines && std::getline(in, line); ++i) out << line << "\n";
    }
  }
  return dir;
}

// `out` is a run directory beside the test's data/.
std::vector<std::string> offload_args(const fs::path& out, int64_t steps) {
  return {KOFF_BINARY,
          "offload",
          "--model",
          fs::path(KOFF_SOURCE_DIR) / "models" / "embedded",
          "--data",
          out.parent_path() / "data",
          "--target",
          "0.2",
          "--out",
          out,
          "--steps",
          std::to_string(steps),
          "--batch",
          "4",
          "--seq",
          "32",
          "--eval-tokens",
          "64",
          "--checkpoint-every",
          "10",
          "--bucket-mb",
          "0.05"};
}

// The mpirun tests need koff built with MPI and an mpiexec (tools/setup.sh installs OpenMPI).
#ifdef KOFF_HAVE_MPI
constexpr bool kHaveMpi = true;
#else
constexpr bool kHaveMpi = false;
#endif
#define KOFF_REQUIRE_MPI() \
  if (!kHaveMpi || std::string(KOFF_MPIEXEC).empty()) GTEST_SKIP() << "koff was built without MPI"

std::vector<std::string> mpirun(int np, std::vector<std::string> args) {
  std::vector<std::string> cmd = {KOFF_MPIEXEC, "-np", std::to_string(np), "--oversubscribe", "--bind-to", "none"};
  cmd.insert(cmd.end(), args.begin(), args.end());
  return cmd;
}

pid_t rank_pid(pid_t mpirun_pid, int rank);

// Each test runs the single-process reference beside its own runs.
class DistJob : public ::testing::Test {
 protected:
  void SetUp() override {
    allow_mpirun_as_root();
    dir_ = fresh_dir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (int steps : {1, 20}) {
      const std::string name = fmt::format("single{}", steps);
      const int status = wait_for(spawn(offload_args(dir_ / name, steps), {}, dir_ / (name + ".log")), 300);
      ASSERT_EQ(status, 0) << read_text(dir_ / (name + ".log"));
    }
  }
  fs::path dir_;

  // ||a - b|| / ||b||: the relative error of a whole tensor.
  static double norm_rel_error(const Tensor& a, const Tensor& b) {
    const auto x = a.to_vector<double>(), y = b.to_vector<double>();
    double d = 0, n = 0;
    for (size_t i = 0; i < x.size(); ++i) d += (x[i] - y[i]) * (x[i] - y[i]), n += y[i] * y[i];
    return std::sqrt(d) / std::max(std::sqrt(n), 1e-30);
  }

  // Run's final checkpoint against one process's (`single`, default "single<steps>"):
  // - after ONE step, the gradient: AdamW's first moment is then 0.1 * gradient, and every element
  //   of every trainable's must be within 1e-5 of the tensor's largest (the summed gradient is the
  //   single-process gradient up to rounding);
  // - after 20 steps, the trainables (log_alpha, lambdas, LoRA, KV): every tensor within 2e-4,
  //   norm-wise, and the exported backbone within 2e-4 of its largest element.
  // The tolerances are the float32 noise floor of a change of summation order, measured on the
  // same runs with ONE process under OMP_NUM_THREADS=1 against =2 (which splits the kernels'
  // reductions differently): 3.6e-6 element-wise after one step; 5.8e-5 norm-wise on the
  // trainables and 5.2e-5 on the backbone after 20 steps (gates at lr 0.5 carry rounding
  // differences into z_det). A rank that drops or double-counts a share of the gradient differs
  // by O(1e-1). Element-wise after 20 steps they drift more: an element whose gradient is near
  // AdamW's eps (1e-8) carries relative rounding noise that m / (sqrt(v) + eps) turns into a visible
  // part of an lr step.
  // Masks identical; only rank 0 wrote (one metrics line per logged step).
  void expect_same_training(const std::string& run_name, int steps, std::string single_name = "", int world = 2) const {
    if (single_name.empty()) single_name = fmt::format("single{}", steps);
    const fs::path run = dir_ / fmt::format("{}{}", run_name, steps), single = dir_ / single_name;
    const auto ckpt = [&](const fs::path& r) {
      return r / "ckpt" / fmt::format("step-{}", steps) / "state.safetensors";
    };
    koff::io::SafetensorsFile ref(ckpt(single)), got(ckpt(run));
    int compared = 0;
    double worst_elem = 0, worst_norm = 0;
    for (const auto& name : ref.names()) {
      if (name.rfind("adam_recovery.", 0) == 0) continue;  // not stepped in the mask phase
      const bool moment = name.rfind("adam.", 0) == 0;
      if (moment != (steps == 1) || (moment && name.back() != 'm')) continue;
      const Tensor a = got.load(name, koff::DType::f32), b = ref.load(name, koff::DType::f32);
      const double elem = koff::max_rel_error(a, b), norm = norm_rel_error(a, b);
      if (steps == 1)
        EXPECT_LE(elem, 1e-5) << name;
      else
        EXPECT_LE(norm, 2e-4) << name;
      worst_elem = std::max(worst_elem, elem), worst_norm = std::max(worst_norm, norm), ++compared;
    }
    EXPECT_GT(compared, 40);  // log_alpha of 6 layers x 2, lambdas, LoRA of 6 layers x 7 x 2, KV
    std::printf("%s after %d step(s): %d %s, worst relative difference %.3g norm-wise, %.3g element-wise\n",
                run_name.c_str(), steps, compared, steps == 1 ? "gradients" : "trainables", worst_norm, worst_elem);
    EXPECT_EQ(read_text(run / "mask.json"), read_text(single / "mask.json"));
    // The exported backbone: the same units removed (a different neuron kept would differ by whole
    // rows), so the same tensors and shapes, and the same values up to z_det's rounding.
    koff::io::SafetensorsFile ref_bb(single / "backbone" / "model.safetensors"),
        got_bb(run / "backbone" / "model.safetensors");
    ASSERT_EQ(got_bb.names(), ref_bb.names());
    for (const auto& name : ref_bb.names()) {
      const Tensor a = got_bb.load(name, koff::DType::f32), b = ref_bb.load(name, koff::DType::f32);
      ASSERT_EQ(a.shape(), b.shape()) << name;
      EXPECT_LE(koff::max_rel_error(a, b), 2e-4) << name;
    }
    EXPECT_FALSE(read_text(run / "mask.json").empty());
    const auto lines = [](const fs::path& p) {
      const std::string t = read_text(p);
      return std::count(t.begin(), t.end(), '\n');
    };
    EXPECT_EQ(lines(run / "metrics.jsonl"), lines(single / "metrics.jsonl"));
    EXPECT_NE(read_text(ckpt(run).parent_path() / "state.json").find(fmt::format("\"world_size\": {}", world)),
              std::string::npos);
  }
};

TEST_F(DistJob, MpirunTwoRanksTrainsLikeOneProcess) {
  KOFF_REQUIRE_MPI();
  for (int steps : {1, 20}) {
    const std::string name = fmt::format("mpi{}", steps);
    const int status = wait_for(spawn(mpirun(2, offload_args(dir_ / name, steps)), {}, dir_ / (name + ".log")), 300);
    const std::string log = read_text(dir_ / (name + ".log"));
    ASSERT_EQ(status, 0) << log;
    EXPECT_NE(log.find("data parallel over 2 ranks (mpi)"), std::string::npos) << log;
    expect_same_training("mpi", steps);
  }
}

// Three ranks share a batch of 4 unevenly (2, 1, 1) with 2 micro-batches per step: still the
// single-process gradient.
TEST_F(DistJob, MpirunThreeRanksUnevenWithAccumulation) {
  KOFF_REQUIRE_MPI();
  auto args = offload_args(dir_ / "single_accum", 1);
  args.insert(args.end(), {"--accum", "2"});
  ASSERT_EQ(wait_for(spawn(args, {}, dir_ / "single_accum.log"), 300), 0) << read_text(dir_ / "single_accum.log");
  args = offload_args(dir_ / "mpi_accum1", 1);
  args.insert(args.end(), {"--accum", "2"});
  const int status = wait_for(spawn(mpirun(3, args), {}, dir_ / "mpi_accum.log"), 300);
  const std::string log = read_text(dir_ / "mpi_accum.log");
  ASSERT_EQ(status, 0) << log;
  EXPECT_NE(log.find("data parallel over 3 ranks (mpi): 1-2 of each step's 4 sequences per rank"), std::string::npos)
      << log;
  expect_same_training("mpi_accum", 1, "single_accum", 3);
}

TEST_F(DistJob, TorchrunStyleTwoRanksTrainsLikeOneProcess) {
  for (int steps : {1, 20}) {
    const std::string name = fmt::format("tcp{}", steps), port = std::to_string(free_port());
    std::vector<pid_t> pids;
    for (int r = 0; r < 2; ++r)
      pids.push_back(spawn(offload_args(dir_ / name, steps),
                           {{"RANK", std::to_string(r)},
                            {"WORLD_SIZE", "2"},
                            {"LOCAL_RANK", std::to_string(r)},
                            {"MASTER_ADDR", "127.0.0.1"},
                            {"MASTER_PORT", port}},
                           dir_ / fmt::format("{}.rank{}.log", name, r)));
    for (int r = 0; r < 2; ++r) {
      const int status = wait_for(pids[static_cast<size_t>(r)], 300);
      ASSERT_EQ(status, 0) << read_text(dir_ / fmt::format("{}.rank{}.log", name, r));
    }
    EXPECT_NE(read_text(dir_ / (name + ".rank0.log")).find("data parallel over 2 ranks (tcp)"), std::string::npos);
    EXPECT_EQ(read_text(dir_ / (name + ".rank1.log")), "");  // rank 1 is silent
    expect_same_training("tcp", steps);
  }
}

// ---- GPU ranks, on the device emulator (KOFF_EMULATE_CUDA=1: the whole multi-rank GPU path
// without a GPU; tools/device.cpp gives rank r cuda:<local rank>, the buckets go through the
// host-staged communicator, the same GradReducer code NCCL serves).

// `args` with --batch set to `batch`, --accum `accum`, on the (emulated) GPU in `dtype`.
std::vector<std::string> on_gpu(std::vector<std::string> args, const std::string& dtype, int batch = 4,
                                int accum = 1) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--batch") args[i + 1] = std::to_string(batch);
  args.insert(args.end(), {"--device", "cuda", "--dtype", dtype, "--accum", std::to_string(accum)});
  return args;
}
const std::vector<std::pair<std::string, std::string>> kEmulate = {{"KOFF_EMULATE_CUDA", "1"}};

// bf16: each rank rounds its half-batch's gradient sums to bf16, which one process computing the
// whole batch at once does not (7e-3 apart after one step, measured), so the reference is one process
// computing the same global batch of 4 in two micro-batches of 2 (--batch 2 --accum 2): the same
// sequences, the same roundings, the halves summed in f32. Against it, the CPU tests' tolerances.
// f32: against the CPU single-process runs themselves (the emulator runs the CPU kernels).
TEST_F(DistJob, EmulatedGpuMpirunTwoRanksTrainsLikeOneProcess) {
  KOFF_REQUIRE_MPI();
  for (int steps : {1, 20}) {
    const std::string ref = fmt::format("gpu_single{}", steps), name = fmt::format("gpu_mpi{}", steps);
    ASSERT_EQ(wait_for(spawn(on_gpu(offload_args(dir_ / ref, steps), "bf16", 2, 2), kEmulate, dir_ / (ref + ".log")),
                       300),
              0)
        << read_text(dir_ / (ref + ".log"));
    const int status =
        wait_for(spawn(mpirun(2, on_gpu(offload_args(dir_ / name, steps), "bf16")), kEmulate, dir_ / (name + ".log")),
                 300);
    const std::string log = read_text(dir_ / (name + ".log"));
    ASSERT_EQ(status, 0) << log;
    EXPECT_NE(log.find("reduced on cuda:0 by mpi+staged"), std::string::npos) << log;
    EXPECT_NE(log.find("cuda:1 is the HOST EMULATOR"), std::string::npos) << log;  // rank 1: its local rank's GPU
    expect_same_training("gpu_mpi", steps, ref);
  }
  const int status = wait_for(
      spawn(mpirun(2, on_gpu(offload_args(dir_ / "gpu_f32_mpi1", 1), "f32")), kEmulate, dir_ / "gpu_f32_mpi.log"), 300);
  ASSERT_EQ(status, 0) << read_text(dir_ / "gpu_f32_mpi.log");
  expect_same_training("gpu_f32_mpi", 1);
}

// The torchrun convention (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) on emulated GPUs.
std::vector<pid_t> torchrun_style(const std::vector<std::string>& args, const fs::path& dir, const std::string& name,
                                  std::vector<std::pair<std::string, std::string>> env = kEmulate) {
  const std::string port = std::to_string(free_port());
  std::vector<pid_t> pids;
  for (int r = 0; r < 2; ++r) {
    auto e = env;
    e.insert(e.end(), {{"RANK", std::to_string(r)},
                       {"WORLD_SIZE", "2"},
                       {"LOCAL_RANK", std::to_string(r)},
                       {"MASTER_ADDR", "127.0.0.1"},
                       {"MASTER_PORT", port}});
    pids.push_back(spawn(args, e, dir / fmt::format("{}.rank{}.log", name, r)));
  }
  return pids;
}

TEST_F(DistJob, EmulatedGpuTorchrunStyleTwoRanksTrainsLikeOneProcess) {
  const int steps = 20;
  const std::string ref = "gpu_single20";
  ASSERT_EQ(wait_for(spawn(on_gpu(offload_args(dir_ / ref, steps), "bf16", 2, 2), kEmulate, dir_ / (ref + ".log")), 300),
            0)
      << read_text(dir_ / (ref + ".log"));
  const auto pids = torchrun_style(on_gpu(offload_args(dir_ / "gpu_tcp20", steps), "bf16"), dir_, "gpu_tcp20");
  for (int r = 0; r < 2; ++r)
    ASSERT_EQ(wait_for(pids[static_cast<size_t>(r)], 300), 0)
        << read_text(dir_ / fmt::format("gpu_tcp20.rank{}.log", r));
  EXPECT_NE(read_text(dir_ / "gpu_tcp20.rank0.log").find("reduced on cuda:0 by tcp+staged"), std::string::npos)
      << read_text(dir_ / "gpu_tcp20.rank0.log");
  expect_same_training("gpu_tcp", steps, ref);
}

// A GPU rank killed mid-run (torchrun convention, no mpirun to stop the job): rank 0 sees the TCP
// connection close inside the next collective and exits with an error naming rank 1.
TEST(DistJobFailure, AKilledGpuRankStopsTheTorchrunStyleJob) {
  allow_mpirun_as_root();
  const fs::path dir = fresh_dir("killed_gpu");
  const auto pids =
      torchrun_style(on_gpu(offload_args(dir / "run", 100000), "bf16"), dir, "job",
                     {{"KOFF_EMULATE_CUDA", "1"}, {"KOFF_DIST_TIMEOUT", "60"}});
  const fs::path log0 = dir / "job.rank0.log";
  const auto started = std::chrono::steady_clock::now();
  while (read_text(log0).find("mask step 10/") == std::string::npos) {
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(240) || wait_for(pids[0], 0.2) != -1) {
      for (pid_t p : pids) ::kill(p, SIGKILL), ::waitpid(p, nullptr, 0);
      FAIL() << "the job did not start training: " << read_text(log0);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  ::kill(pids[1], SIGKILL);
  ::waitpid(pids[1], nullptr, 0);
  const int status = wait_for(pids[0], 120);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (status == -1) ::kill(pids[0], SIGKILL), ::waitpid(pids[0], nullptr, 0);
  const std::string log = read_text(log0);
  ASSERT_NE(status, -1) << "rank 0 still running 120 s after rank 1 was killed:\n" << log;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << log;
  EXPECT_LT(seconds, 60.0);
  EXPECT_NE(log.find("koff: error: rank 0/2 (tcp): "), std::string::npos) << log;
  EXPECT_NE(log.find("the connection to rank 1 closed (the process died?)"), std::string::npos) << log;
  std::printf("killed GPU rank 1: rank 0 exited %d after %.1f s\n", WEXITSTATUS(status), seconds);
}

// SIGTERM to every rank (what Slurm's scancel does) stops the job on every rank (at a step boundary
// with a checkpoint, inside a step by abandoning it); the same command resumes it, and it ends bit for bit where an uninterrupted
// two-rank run ends.
TEST_F(DistJob, MpirunStopAndResumeIsBitIdentical) {
  KOFF_REQUIRE_MPI();
  const auto args = [&](const std::string& name) {
    auto a = offload_args(dir_ / name, 50);
    a.insert(a.end(), {"--recovery-steps", "5"});
    return mpirun(2, a);
  };
  ASSERT_EQ(wait_for(spawn(args("whole"), {}, dir_ / "whole.log"), 300), 0) << read_text(dir_ / "whole.log");
  const pid_t job = spawn(args("parts"), {}, dir_ / "part1.log");
  const auto t0 = std::chrono::steady_clock::now();
  while (read_text(dir_ / "part1.log").find("mask step 10/") == std::string::npos &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  for (int r = 0; r < 2; ++r) {
    const pid_t p = rank_pid(job, r);
    ASSERT_GT(p, 0);
    ::kill(p, SIGTERM);
  }
  const int status = wait_for(job, 120);
  ASSERT_NE(status, -1);
  const std::string part1 = read_text(dir_ / "part1.log");
  // At a step boundary the ranks checkpoint that step; inside a step (the usual case, a step being
  // longer than the boundary) they abandon it and the last checkpoint stays (engine/tensor/interrupt.h).
  ASSERT_TRUE(part1.find("interrupted: checkpoint saved") != std::string::npos ||
              part1.find("the step was abandoned") != std::string::npos)
      << part1;
  ASSERT_EQ(wait_for(spawn(args("parts"), {}, dir_ / "part2.log"), 300), 0) << read_text(dir_ / "part2.log");
  const std::string part2 = read_text(dir_ / "part2.log");
  EXPECT_NE(part2.find("resumed"), std::string::npos) << part2;
  const auto state = [&](const std::string& name) {
    return read_text(dir_ / name / "ckpt" / "step-55" / "state.safetensors");
  };
  EXPECT_FALSE(state("whole").empty());
  EXPECT_TRUE(state("whole") == state("parts")) << "the resumed run's final state differs";
  EXPECT_EQ(read_text(dir_ / "whole" / "mask.json"), read_text(dir_ / "parts" / "mask.json"));
}

// The pid of the process that mpirun started as `rank` (its child with OMPI_COMM_WORLD_RANK=rank).
pid_t rank_pid(pid_t mpirun_pid, int rank) {
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::istringstream stat(read_text(e.path() / "stat"));
    std::string pid, comm, state;
    pid_t ppid = 0;
    stat >> pid >> comm >> state >> ppid;
    if (ppid != mpirun_pid) continue;
    const std::string env = read_text(e.path() / "environ");
    if (env.find(fmt::format("OMPI_COMM_WORLD_RANK={}", rank) + '\0') != std::string::npos) return std::stoi(name);
  }
  return -1;
}

// Starts a long mpirun job, waits until it trains, sends `sig` to rank 1, and returns (status,
// seconds from the signal to the end of mpirun, log).
std::tuple<int, double, std::string> disturb_rank_1(const std::string& name, int sig, const char* timeout) {
  allow_mpirun_as_root();
  const fs::path dir = fresh_dir(name), log = dir / "job.log";
  const pid_t job = spawn(mpirun(2, offload_args(dir / "run", 100000)), {{"KOFF_DIST_TIMEOUT", timeout}}, log);
  const auto started = std::chrono::steady_clock::now();
  while (read_text(log).find("mask step 10/") == std::string::npos) {  // rank 0 has done 10 steps
    if (std::chrono::steady_clock::now() - started > std::chrono::seconds(240) || wait_for(job, 0.2) != -1) {
      ::kill(job, SIGKILL);
      ::waitpid(job, nullptr, 0);
      ADD_FAILURE() << "the job did not start training: " << read_text(log);
      return {-1, 0, read_text(log)};
    }
  }
  const pid_t victim = rank_pid(job, 1);
  EXPECT_GT(victim, 0) << "rank 1 not found";
  const auto t0 = std::chrono::steady_clock::now();
  if (victim > 0) ::kill(victim, sig);
  int status = wait_for(job, 120);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (status == -1) {  // a hang: clean up, the test fails below
    if (victim > 0) ::kill(victim, SIGKILL);
    ::kill(job, SIGKILL);
    ::waitpid(job, nullptr, 0);
  }
  return {status, seconds, read_text(log)};
}

TEST(DistJobFailure, AKilledRankStopsTheJob) {
  KOFF_REQUIRE_MPI();
  auto [status, seconds, log] = disturb_rank_1("killed", SIGKILL, "60");
  ASSERT_NE(status, -1) << "mpirun still running 120 s after rank 1 was killed:\n" << log;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << log;
  EXPECT_LT(seconds, 60.0);
  // OpenMPI names the dead rank and the signal.
  EXPECT_NE(log.find("rank 1 with PID"), std::string::npos) << log;
  EXPECT_NE(log.find("signal 9"), std::string::npos) << log;
  std::printf("killed rank 1: mpirun exited %d after %.1f s\n", WEXITSTATUS(status), seconds);
}

TEST(DistJobFailure, AHungRankTimesOutWithAClearMessage) {
  KOFF_REQUIRE_MPI();
  auto [status, seconds, log] = disturb_rank_1("stopped", SIGSTOP, "10");
  ASSERT_NE(status, -1) << "mpirun still running 120 s after rank 1 was stopped:\n" << log;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << log;
  EXPECT_GE(seconds, 10.0);
  EXPECT_LT(seconds, 60.0);
  EXPECT_NE(log.find("koff: error: rank 0/2 (mpi): "), std::string::npos) << log;
  EXPECT_NE(log.find("did not complete within 10 s (KOFF_DIST_TIMEOUT): another rank died or hangs"), std::string::npos)
      << log;
  std::printf("stopped rank 1: mpirun exited %d after %.1f s\n", WEXITSTATUS(status), seconds);
}

}  // namespace
