// engine/cpu/threads.h: the governor's decisions on given step measurements, and the clocks and the
// thread count it acts through. The measurements are made up (no timing is asserted).
#include <gtest/gtest.h>
#include <omp.h>

#include <atomic>

#include "engine/cpu/threads.h"

namespace koff::cpu {
namespace {

StepTimes step(double wall, double cores_used, double idle_cores) { return {wall, wall * cores_used, wall * idle_cores}; }

TEST(ThreadGovernor, NeverActsOnTheFirstStepNorWhenTheThreadsGetTheirCores) {
  ThreadGovernor g(2, true);
  EXPECT_EQ(g.observe(step(1.8, 0.9, 0.0)), "");  // the first step: one-time costs, not judged
  EXPECT_EQ(g.threads(), 2);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(g.observe(step(0.25, 1.9, 0.05)), "");
  EXPECT_EQ(g.threads(), 2);
  EXPECT_EQ(g.trials(), 0);
  EXPECT_EQ(g.steps_below_max(), 0);
}

TEST(ThreadGovernor, ASeverelyStarvedFirstStepStartsATrialAtOnce) {
  ThreadGovernor g(2, true);
  EXPECT_EQ(g.observe(step(1.8, 0.3, 0.0)), "");  // < 1/4 core a thread: judged although the first
  EXPECT_EQ(g.threads(), 1);
  EXPECT_NE(g.observe(step(0.6, 0.75, 0.0)), "");  // kept
  EXPECT_EQ(g.threads(), 1);
  ThreadGovernor h(2, true);
  h.observe(step(0.1, 0.3, 0.0));  // too short to judge alone: left out
  EXPECT_EQ(h.threads(), 2);
}

TEST(ThreadGovernor, StarvedThreadsTryFewerAndKeepThemWhenNotSlower) {
  ThreadGovernor g(2, true);
  g.observe(step(2.0, 0.9, 0.0));  // the first step, left out
  EXPECT_EQ(g.observe(step(1.8, 0.3, 0.0)), "");  // 0.3 of 2 cores, none idle: try floor(0.3 + 0.25) -> 1
  EXPECT_EQ(g.threads(), 1);
  const std::string line = g.observe(step(0.6, 0.75, 0.0));  // the trial: 0.6 s against 1.8 s
  EXPECT_NE(line.find("cpu threads 2 -> 1"), std::string::npos) << line;
  EXPECT_NE(line.find("1800 ms on 2 threads (0.30 cores busy for this process, 0.00 idle)"), std::string::npos) << line;
  EXPECT_NE(line.find("600 ms on 1"), std::string::npos) << line;
  EXPECT_EQ(g.threads(), 1);
  EXPECT_EQ(g.kept(), 1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(g.observe(step(0.6, 0.75, 0.0)), "");  // still loaded: stays
  EXPECT_EQ(g.threads(), 1);
  EXPECT_EQ(g.trials(), 1);
}

TEST(ThreadGovernor, ALosingTrialGoesBackAndWaitsLongerEachTime) {
  ThreadGovernor g(2, true);
  g.observe(step(0.5, 1.0, 0.0));
  g.observe(step(0.46, 1.0, 0.0));  // 1 core of 2: trial at 1
  ASSERT_EQ(g.threads(), 1);
  EXPECT_EQ(g.observe(step(0.6, 0.75, 0.0)), "");  // slower than 0.46 * 1.02: back to 2
  EXPECT_EQ(g.threads(), 2);
  for (int i = 0; i < 4; ++i) {  // waits 4 steps
    g.observe(step(0.46, 1.0, 0.0));
    EXPECT_EQ(g.threads(), 2) << i;
  }
  g.observe(step(0.46, 1.0, 0.0));  // then the next trial
  EXPECT_EQ(g.threads(), 1);
  g.observe(step(0.6, 0.75, 0.0));
  EXPECT_EQ(g.threads(), 2);
  for (int i = 0; i < 8; ++i) {  // and now 8
    g.observe(step(0.46, 1.0, 0.0));
    EXPECT_EQ(g.threads(), 2) << i;
  }
  g.observe(step(0.46, 1.0, 0.0));
  EXPECT_EQ(g.threads(), 1);
  EXPECT_EQ(g.trials(), 3);
  EXPECT_EQ(g.kept(), 0);
}

TEST(ThreadGovernor, AWaitEndsWhenTheStepsSlowDownALot) {
  ThreadGovernor g(2, true);
  g.observe(step(0.5, 1.0, 0.0));
  g.observe(step(0.46, 1.0, 0.0));  // trial at 1
  g.observe(step(0.6, 0.75, 0.0));  // lost: back to 2, waiting
  ASSERT_EQ(g.threads(), 2);
  g.observe(step(0.47, 1.0, 0.0));  // still waiting
  EXPECT_EQ(g.threads(), 2);
  g.observe(step(1.8, 0.3, 0.0));  // 4x slower than when the wait began: judged now, a trial at 1
  EXPECT_EQ(g.threads(), 1);
  EXPECT_NE(g.observe(step(0.6, 0.75, 0.0)), "");  // and kept
  EXPECT_EQ(g.threads(), 1);
}

TEST(ThreadGovernor, IdleCoresBringThreadsBackUpToTheStartingCount) {
  ThreadGovernor g(4, true);
  g.observe(step(1.0, 1.0, 0.0));
  g.observe(step(1.0, 1.0, 0.0));  // 1 of 4 cores, none idle: trial at 1
  ASSERT_EQ(g.threads(), 1);
  EXPECT_NE(g.observe(step(0.9, 0.9, 0.0)), "");  // kept
  ASSERT_EQ(g.threads(), 1);
  g.observe(step(0.9, 0.95, 1.9));  // others stopped: 0.95 + 1.9 idle -> 3 cores could be had
  EXPECT_EQ(g.threads(), 3);
  const std::string line = g.observe(step(0.4, 2.8, 0.9));  // faster: kept
  EXPECT_NE(line.find("cpu threads 1 -> 3"), std::string::npos) << line;
  g.observe(step(0.4, 2.8, 1.0));  // 2.8 + 1.0 idle -> 4
  EXPECT_EQ(g.threads(), 4);
  g.observe(step(0.41, 2.8, 1.0));  // not 2% faster: back to 3
  EXPECT_EQ(g.threads(), 3);
  for (int i = 0; i < 50; ++i) g.observe(step(0.3, 3.9, 0.0));
  EXPECT_LE(g.threads(), 4);  // never above the starting count
}

TEST(ThreadGovernor, ShortStepsAreJudgedTogetherOverAFifthOfASecond) {
  const double ms2 = 1.0 / 512;  // ~2 ms, exact in binary: 103 steps are the first >= 0.2 s
  ThreadGovernor g(2, true);
  g.observe(step(ms2, 0.3, 0.0));  // the first step: left out
  for (int i = 0; i < 102; ++i) {   // 199 ms of starved steps: not yet a window
    g.observe(step(ms2, 0.3, 0.0));
    ASSERT_EQ(g.threads(), 2) << i;
  }
  g.observe(step(ms2, 0.3, 0.0));  // 201 ms: judged, a trial at 1
  EXPECT_EQ(g.threads(), 1);
  std::string line;
  for (int i = 0; i < 103; ++i) line += g.observe(step(ms2, 0.8, 0.0));  // the trial's window: as fast, kept
  EXPECT_NE(line.find("cpu threads 2 -> 1: a step took 2 ms on 2 threads"), std::string::npos) << line;
  EXPECT_EQ(g.threads(), 1);
}

TEST(ThreadGovernor, UnknownIdleTimeNeverTriesMoreThreads) {
  ThreadGovernor g(2, true);
  g.observe(step(1.8, 0.9, 0.0));
  g.observe(step(1.8, 0.3, 0.0));
  g.observe(step(0.6, 0.75, 0.0));  // kept at 1
  ASSERT_EQ(g.threads(), 1);
  for (int i = 0; i < 10; ++i) g.observe({0.3, 0.3, -1});  // no /proc/stat
  EXPECT_EQ(g.threads(), 1);
}

TEST(ThreadGovernor, FixedOrSingleThreadedNeverChanges) {
  for (auto [max, adaptive] : {std::pair{2, false}, std::pair{1, true}}) {
    ThreadGovernor g(max, adaptive);
    EXPECT_FALSE(g.adaptive());
    for (int i = 0; i < 10; ++i) EXPECT_EQ(g.observe(step(1.8, 0.3, 0.0)), "");
    EXPECT_EQ(g.threads(), max);
    EXPECT_EQ(g.trials(), 0);
  }
}

TEST(StepClock, MeasuresWallAndThisProcesssCpuTime) {
  StepClock clock;
  clock.start();
  volatile double x = 0;
  for (int i = 0; i < 20'000'000; ++i) x = x + 1e-9 * i;
  const StepTimes t = clock.stop();
  EXPECT_GT(t.wall, 0);
  EXPECT_GT(t.cpu, 0);
  EXPECT_GE(machine_idle_seconds(), 0);  // Linux: /proc/stat
  EXPECT_GE(t.idle, 0);
}

TEST(StepThreads, SetsTheThreadsOfTheNextParallelRegion) {
  const int before = step_threads();
  set_step_threads(1);
  EXPECT_EQ(step_threads(), 1);
  std::atomic<int> seen{0};
#pragma omp parallel
  {
#pragma omp single
    seen = omp_get_num_threads();
  }
  EXPECT_EQ(seen.load(), 1);
  set_step_threads(before);
  EXPECT_EQ(step_threads(), before);
}

}  // namespace
}  // namespace koff::cpu
