// The engine with a fake executor (y = 2x + 1, row by row), so that batching, priorities,
// deadlines, the bounded queue, shutdown and the memory pool are tested without TVM.
#include "ember/engine.h"

#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ember::engine {
namespace {

using runtime::Executor;
using runtime::OutputBuffer;
using std::chrono::milliseconds;

constexpr DLDataType kF32{kDLFloat, 32, 1};
constexpr int64_t kWidth = 4;

// State shared by every fake executor of one engine: a gate that holds runs, and what ran.
struct FakeState {
  std::mutex mutex;
  std::condition_variable changed;
  bool gate_open = true;
  int running = 0;
  std::vector<int64_t> batch_rows;  // rows per Run call, in order
  std::vector<float> first_values;  // x[0][0] of each Run, to see the order requests ran in
  Status fail_with;                 // returned by every Run when not ok
  int64_t run_sleep_us = 0;         // each Run takes at least this long
  int64_t team_sleep_us = 0;        // ... or this long when OpenMP would use more than one thread
  std::vector<int> teams;           // omp_get_max_threads() at each Run

  void Close() {
    std::lock_guard<std::mutex> lock(mutex);
    gate_open = false;
  }
  void Open() {
    {
      std::lock_guard<std::mutex> lock(mutex);
      gate_open = true;
    }
    changed.notify_all();
  }
  void WaitUntilRunning(int n) {
    std::unique_lock<std::mutex> lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, std::chrono::seconds(10), [&] { return running >= n; }));
  }
};

// Input x: f32[batch, 4]; outputs y = 2x + 1 with shape [batch, 4] and yt, y transposed: [4, batch]
// (a batch axis other than 0, which the engine must copy per request).
class FakeExecutor final : public Executor {
 public:
  explicit FakeExecutor(std::shared_ptr<FakeState> state) : state_(std::move(state)) {}
  Status Run(const std::vector<TensorView>& inputs, int64_t rows,
             const std::vector<OutputBuffer>& outputs) override {
    {
      std::unique_lock<std::mutex> lock(state_->mutex);
      ++state_->running;
      state_->changed.notify_all();
      state_->changed.wait(lock, [&] { return state_->gate_open; });
      --state_->running;
      state_->batch_rows.push_back(rows);
      state_->teams.push_back(omp_get_max_threads());
      const auto* x = static_cast<const float*>(inputs[0].data);
      state_->first_values.push_back(x[0]);
      if (!state_->fail_with.ok()) return state_->fail_with;
    }
    const bool team = omp_get_max_threads() > 1;
    std::this_thread::sleep_for(
        std::chrono::microseconds(team && state_->team_sleep_us ? state_->team_sleep_us : state_->run_sleep_us));
    if (inputs[0].shape != std::vector<int64_t>{rows, kWidth}) return Status::Internal("bad shape");
    const auto* x = static_cast<const float*>(inputs[0].data);
    auto* y = static_cast<float*>(outputs[0].data);
    auto* yt = static_cast<float*>(outputs[1].data);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < kWidth; ++c) {
        y[r * kWidth + c] = 2 * x[r * kWidth + c] + 1;
        yt[c * rows + r] = 2 * x[r * kWidth + c] + 1;
      }
    }
    return Status::Ok();
  }

 private:
  std::shared_ptr<FakeState> state_;
};

ModelSpec FakeSpec(std::vector<int64_t> buckets = {1, 4, 8, 16}) {
  ModelSpec spec;
  spec.inputs.push_back(TensorSpec{"x", kF32, {-1, kWidth}, 0});
  spec.outputs.push_back(TensorSpec{"y", kF32, {-1, kWidth}, 0});
  spec.outputs.push_back(TensorSpec{"yt", kF32, {kWidth, -1}, 1});
  spec.buckets = std::move(buckets);
  return spec;
}

struct Fixture {
  std::shared_ptr<FakeState> state = std::make_shared<FakeState>();
  std::unique_ptr<Engine> engine;

  explicit Fixture(EngineOptions options, ModelSpec spec = FakeSpec()) {
    if (options.cores == 0) options.cores = 4;
    auto created = Engine::Create(std::move(spec), [s = state]() -> Result<std::unique_ptr<Executor>> {
      return std::unique_ptr<Executor>(std::make_unique<FakeExecutor>(s));
    }, options);
    EXPECT_TRUE(created.ok()) << created.status().ToString();
    if (created.ok()) engine = std::move(created).value();
  }
};

// A clock the test moves by hand (EngineOptions::clock_us): deadlines and queue delays pass
// exactly when the test says, never by sleeping.
struct SimulatedClock {
  std::shared_ptr<std::atomic<int64_t>> now_us = std::make_shared<std::atomic<int64_t>>(1'000'000);

  std::function<int64_t()> Reader() const {
    return [now = now_us] { return now->load(std::memory_order_acquire); };
  }
  void Advance(int64_t us) { now_us->fetch_add(us, std::memory_order_acq_rel); }
};

// Rows of x: row r of a request tagged `tag` is tag * 100 + r in every column.
std::vector<float> Rows(float tag, int64_t rows) {
  std::vector<float> x(static_cast<size_t>(rows * kWidth));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < kWidth; ++c) x[static_cast<size_t>(r * kWidth + c)] = tag * 100 + static_cast<float>(r);
  }
  return x;
}

// Collects completions; Wait(n) blocks until n arrived.
struct Collector {
  struct Done {
    int tag;
    Status status;
    std::vector<OutputTensor> outputs;
  };
  std::mutex mutex;
  std::condition_variable changed;
  std::vector<Done> done;

  Completion For(int tag) {
    return [this, tag](Status status, std::vector<OutputTensor> outputs) {
      // Notify under the lock: a waiter may destroy the collector as soon as it can see `done`.
      std::lock_guard<std::mutex> lock(mutex);
      done.push_back(Done{tag, std::move(status), std::move(outputs)});
      changed.notify_all();
    };
  }
  void Wait(size_t n) {
    std::unique_lock<std::mutex> lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, std::chrono::seconds(10), [&] { return done.size() >= n; }))
        << "only " << done.size() << " of " << n << " completions arrived";
  }
  size_t Count() {
    std::lock_guard<std::mutex> lock(mutex);
    return done.size();
  }
};

Status Submit(Engine& engine, int tag, int64_t rows, Collector& collector, SubmitOptions options = {}) {
  const std::vector<float> x = Rows(static_cast<float>(tag), rows);
  runtime::NamedTensorViews inputs{{"x", TensorView{x.data(), kF32, {rows, kWidth}}}};
  return engine.Submit(inputs, options, collector.For(tag));  // x dies here: the engine copied it
}

void ExpectOutputsFor(const Collector::Done& d, int64_t rows) {
  ASSERT_TRUE(d.status.ok()) << d.status.ToString();
  ASSERT_EQ(d.outputs.size(), 2u);
  EXPECT_EQ(d.outputs[0].shape, (std::vector<int64_t>{rows, kWidth}));
  EXPECT_EQ(d.outputs[1].shape, (std::vector<int64_t>{kWidth, rows}));
  const auto* y = static_cast<const float*>(d.outputs[0].data());
  const auto* yt = static_cast<const float*>(d.outputs[1].data());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < kWidth; ++c) {
      const float want = 2 * (static_cast<float>(d.tag) * 100 + static_cast<float>(r)) + 1;
      ASSERT_EQ(y[r * kWidth + c], want) << "tag " << d.tag << " row " << r;
      ASSERT_EQ(yt[c * rows + r], want) << "tag " << d.tag << " row " << r;
    }
  }
}

TEST(Engine, RunsARequestAndReturnsItsRows) {
  Fixture f({});
  Collector c;
  ASSERT_TRUE(Submit(*f.engine, 7, 3, c).ok());
  c.Wait(1);
  ExpectOutputsFor(c.done[0], 3);
  std::lock_guard<std::mutex> lock(f.state->mutex);
  EXPECT_EQ(f.state->batch_rows, (std::vector<int64_t>{4}));  // padded to the bucket of 4
}

TEST(Engine, BatchesRequestsThatWaitTogetherAndGivesEachItsRows) {
  SimulatedClock clock;
  EngineOptions options;
  options.max_batch_size = 16;
  options.max_queue_delay_us = 20000;
  options.preferred_batch_sizes = {16};
  options.clock_us = clock.Reader();
  Fixture f(options);
  Collector c;
  f.state->Close();
  ASSERT_TRUE(Submit(*f.engine, 1, 16, c).ok());  // a preferred size: occupies the lane at once
  f.state->WaitUntilRunning(1);
  for (int tag = 2; tag <= 6; ++tag) ASSERT_TRUE(Submit(*f.engine, tag, tag - 1, c).ok());  // 15 rows
  f.state->Open();
  clock.Advance(20000);  // the delay passes: the 15 rows close as one batch
  c.Wait(6);
  for (const auto& d : c.done) ExpectOutputsFor(d, d.tag == 1 ? 16 : d.tag - 1);
  std::lock_guard<std::mutex> lock(f.state->mutex);
  EXPECT_EQ(f.state->batch_rows, (std::vector<int64_t>{16, 16}));  // 15 rows ran as one bucket
  const MetricsSnapshot m = f.engine->metrics();
  EXPECT_EQ(m.batch_rows.count, 2u);
  EXPECT_EQ(m.batch_rows.max, 16u);
  EXPECT_EQ(m.successes, 6u);
}

TEST(Engine, ABatchWaitsForTheDelayOfItsOldestRequest) {
  SimulatedClock clock;
  EngineOptions options;
  options.max_batch_size = 16;
  options.max_queue_delay_us = 30000;
  options.preferred_batch_sizes = {16};
  options.clock_us = clock.Reader();
  Fixture f(options);
  Collector c;
  ASSERT_TRUE(Submit(*f.engine, 1, 2, c).ok());
  clock.Advance(29999);
  ASSERT_TRUE(Submit(*f.engine, 2, 3, c).ok());  // joins: the oldest has not waited 30 ms yet
  EXPECT_EQ(c.Count(), 0u);
  clock.Advance(1);
  c.Wait(2);
  {
    std::lock_guard<std::mutex> lock(f.state->mutex);
    EXPECT_EQ(f.state->batch_rows, (std::vector<int64_t>{8}));  // 5 rows together, bucket 8
  }
  const MetricsSnapshot m = f.engine->metrics();  // queue times on the simulated clock
  EXPECT_EQ(m.queue_us.max, 30000u);
  EXPECT_EQ(m.queue_us.sum, 30000u + 1u);  // the second request waited 1 us
}

TEST(Engine, BatchesNeverExceedMaxBatchSizeRows) {
  EngineOptions options;
  options.max_batch_size = 8;
  options.max_queue_delay_us = 0;
  Fixture f(options);
  Collector c;
  f.state->Close();
  ASSERT_TRUE(Submit(*f.engine, 0, 1, c).ok());
  f.state->WaitUntilRunning(1);
  for (int tag = 1; tag <= 10; ++tag) ASSERT_TRUE(Submit(*f.engine, tag, 3, c).ok());
  f.state->Open();
  c.Wait(11);
  for (const auto& d : c.done) ExpectOutputsFor(d, d.tag == 0 ? 1 : 3);
  EXPECT_LE(f.engine->metrics().batch_rows.max, 8u);
}

TEST(Engine, AnOversizedRequestRunsAloneAcrossBuckets) {
  Fixture f({});
  Collector c;
  ASSERT_TRUE(Submit(*f.engine, 3, 37, c).ok());  // largest bucket is 16
  c.Wait(1);
  ExpectOutputsFor(c.done[0], 37);
}

TEST(Engine, HigherPriorityRunsFirst) {
  EngineOptions options;
  options.max_batch_size = 1;
  Fixture f(options);
  Collector c;
  f.state->Close();
  ASSERT_TRUE(Submit(*f.engine, 1, 1, c).ok());
  f.state->WaitUntilRunning(1);
  ASSERT_TRUE(Submit(*f.engine, 2, 1, c, SubmitOptions{0, -1}).ok());
  ASSERT_TRUE(Submit(*f.engine, 3, 1, c, SubmitOptions{5, -1}).ok());
  ASSERT_TRUE(Submit(*f.engine, 4, 1, c, SubmitOptions{-1, -1}).ok());
  f.state->Open();
  c.Wait(4);
  std::lock_guard<std::mutex> lock(f.state->mutex);
  EXPECT_EQ(f.state->first_values, (std::vector<float>{100, 300, 200, 400}));
}

TEST(Engine, ARequestPastItsDeadlineFailsAndNeverRuns) {
  SimulatedClock clock;
  EngineOptions options;
  options.clock_us = clock.Reader();
  Fixture f(options);
  Collector c;
  f.state->Close();
  ASSERT_TRUE(Submit(*f.engine, 1, 1, c).ok());
  f.state->WaitUntilRunning(1);
  ASSERT_TRUE(Submit(*f.engine, 2, 1, c, SubmitOptions{0, 1000}).ok());  // 1 ms
  ASSERT_TRUE(Submit(*f.engine, 3, 1, c, SubmitOptions{0, 0}).ok());     // no deadline
  clock.Advance(1001);  // while the lane is still busy with request 1
  f.state->Open();
  c.Wait(3);
  for (const auto& d : c.done) {
    if (d.tag == 2) {
      EXPECT_EQ(d.status.code(), StatusCode::kDeadlineExceeded) << d.status.ToString();
      EXPECT_TRUE(d.outputs.empty());
    } else {
      ExpectOutputsFor(d, 1);
    }
  }
  {
    std::lock_guard<std::mutex> lock(f.state->mutex);
    EXPECT_EQ(std::count(f.state->first_values.begin(), f.state->first_values.end(), 200.0f), 0);
  }
  EXPECT_EQ(f.engine->metrics().failures_by_code[static_cast<size_t>(StatusCode::kDeadlineExceeded)], 1u);
}

TEST(Engine, TheDefaultTimeoutAppliesWhenARequestNamesNone) {
  SimulatedClock clock;
  EngineOptions options;
  options.default_timeout_us = 1000;
  options.clock_us = clock.Reader();
  Fixture f(options);
  Collector c;
  f.state->Close();
  ASSERT_TRUE(Submit(*f.engine, 1, 1, c).ok());  // the default deadline; starts at once
  f.state->WaitUntilRunning(1);
  ASSERT_TRUE(Submit(*f.engine, 2, 1, c).ok());                       // the default: 1 ms
  ASSERT_TRUE(Submit(*f.engine, 3, 1, c, SubmitOptions{0, 5000}).ok());  // its own: 5 ms
  clock.Advance(1001);
  f.state->Open();
  c.Wait(3);
  for (const auto& d : c.done) {
    if (d.tag == 2) {
      EXPECT_EQ(d.status.code(), StatusCode::kDeadlineExceeded) << d.status.ToString();
    } else {
      ExpectOutputsFor(d, 1);
    }
  }
}

TEST(Engine, AFullQueueRefusesAtOnceAndNeverCallsTheCompletion) {
  EngineOptions options;
  options.max_queue_size = 2;
  Fixture f(options);
  Collector c;
  f.state->Close();
  ASSERT_TRUE(Submit(*f.engine, 1, 1, c).ok());
  f.state->WaitUntilRunning(1);  // running, so no longer queued
  ASSERT_TRUE(Submit(*f.engine, 2, 1, c).ok());
  ASSERT_TRUE(Submit(*f.engine, 3, 1, c).ok());
  const Status full = Submit(*f.engine, 4, 1, c);
  EXPECT_EQ(full.code(), StatusCode::kQueueFull);
  EXPECT_NE(full.message().find("max_queue_size=2"), std::string::npos) << full.message();
  f.state->Open();
  c.Wait(3);
  f.engine->Close(true);
  EXPECT_EQ(c.Count(), 3u);
  EXPECT_EQ(f.engine->metrics().rejections, 1u);
}

TEST(Engine, CloseWithDrainRunsEveryQueuedRequest) {
  EngineOptions options;
  options.max_queue_delay_us = 10'000'000;  // only draining closes these batches
  options.preferred_batch_sizes = {16};
  Fixture f(options);
  Collector c;
  f.state->Close();
  ASSERT_TRUE(Submit(*f.engine, 1, 16, c).ok());  // a preferred size: runs at once
  f.state->WaitUntilRunning(1);
  for (int tag = 2; tag <= 6; ++tag) ASSERT_TRUE(Submit(*f.engine, tag, 2, c).ok());
  std::thread closer([&] { f.engine->Close(/*drain=*/true); });
  while (!f.engine->closed()) std::this_thread::yield();  // Close() has begun; it waits on the gate
  EXPECT_EQ(Submit(*f.engine, 9, 1, c).code(), StatusCode::kClosed);
  f.state->Open();
  closer.join();  // returns only after every completion ran
  ASSERT_EQ(c.Count(), 6u);
  for (const auto& d : c.done) ExpectOutputsFor(d, d.tag == 1 ? 16 : 2);
}

TEST(Engine, CloseWithoutDrainFailsQueuedRequestsAndFinishesTheRunningOne) {
  Fixture f({});
  Collector c;
  f.state->Close();
  ASSERT_TRUE(Submit(*f.engine, 1, 1, c).ok());
  f.state->WaitUntilRunning(1);
  for (int tag = 2; tag <= 4; ++tag) ASSERT_TRUE(Submit(*f.engine, tag, 1, c).ok());
  std::thread closer([&] { f.engine->Close(/*drain=*/false); });
  c.Wait(3);  // the queued ones fail while the running one is still held
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(c.done[i].status.code(), StatusCode::kClosed);
  f.state->Open();
  closer.join();
  ASSERT_EQ(c.Count(), 4u);
  ExpectOutputsFor(c.done[3], 1);
  EXPECT_EQ(c.done[3].tag, 1);
  EXPECT_TRUE(f.engine->closed());
  f.engine->Close(true);  // idempotent
}

TEST(Engine, DestroyingTheEngineCompletesEveryRequest) {
  Collector c;
  auto state = std::make_shared<FakeState>();
  {
    Fixture f({});
    state = f.state;
    f.state->Close();
    ASSERT_TRUE(Submit(*f.engine, 1, 1, c).ok());
    f.state->WaitUntilRunning(1);
    for (int tag = 2; tag <= 5; ++tag) ASSERT_TRUE(Submit(*f.engine, tag, 1, c).ok());
    std::thread opener([s = f.state, &c] {
      c.Wait(4);  // the destructor failed the 4 queued requests; the running one is still held
      s->Open();
    });
    f.engine.reset();
    opener.join();
  }
  EXPECT_EQ(c.Count(), 5u);
}

TEST(Engine, AnExecutorErrorFailsEveryRequestInTheBatch) {
  EngineOptions options;
  options.max_queue_delay_us = 20000;
  options.preferred_batch_sizes = {16};
  Fixture f(options);
  f.state->fail_with = Status::RuntimeError("kernel exploded");
  Collector c;
  ASSERT_TRUE(Submit(*f.engine, 1, 2, c).ok());
  ASSERT_TRUE(Submit(*f.engine, 2, 2, c).ok());
  c.Wait(2);
  for (const auto& d : c.done) {
    EXPECT_EQ(d.status.code(), StatusCode::kRuntimeError);
    EXPECT_EQ(d.status.message(), "kernel exploded");
  }
  EXPECT_EQ(f.engine->metrics().failures_by_code[static_cast<size_t>(StatusCode::kRuntimeError)], 2u);
}

TEST(Engine, BadInputsAreRefusedAtSubmit) {
  Fixture f({});
  Collector c;
  const std::vector<float> x(12);
  runtime::NamedTensorViews wrong_width{{"x", TensorView{x.data(), kF32, {4, 3}}}};
  EXPECT_EQ(f.engine->Submit(wrong_width, {}, c.For(1)).code(), StatusCode::kInvalidArgument);
  runtime::NamedTensorViews wrong_name{{"z", TensorView{x.data(), kF32, {3, 4}}}};
  EXPECT_EQ(f.engine->Submit(wrong_name, {}, c.For(2)).code(), StatusCode::kInvalidArgument);
  runtime::NamedTensorViews ok{{"x", TensorView{x.data(), kF32, {3, 4}}}};
  EXPECT_EQ(f.engine->Submit(ok, SubmitOptions{0, -5}, c.For(3)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(f.engine->Submit(ok, {}, nullptr).code(), StatusCode::kInvalidArgument);
  f.engine->Close(true);
  EXPECT_EQ(c.Count(), 0u);
  EXPECT_EQ(f.engine->metrics().rejections, 4u);
}

TEST(Engine, OptionsAreCheckedAndDefaultsResolved) {
  auto factory = []() -> Result<std::unique_ptr<Executor>> {
    return std::unique_ptr<Executor>(std::make_unique<FakeExecutor>(std::make_shared<FakeState>()));
  };
  auto bad = [&](EngineOptions o, ModelSpec spec = FakeSpec()) {
    auto created = Engine::Create(std::move(spec), factory, o);
    EXPECT_FALSE(created.ok());
    return created.ok() ? std::string() : created.status().message();
  };
  EngineOptions over;
  over.cores = 2;
  over.lanes = 2;
  over.threads_per_lane = 2;
  EXPECT_NE(bad(over).find("exceeds the 2 cores"), std::string::npos);
  EngineOptions negative_lanes;  // 0 is "automatic" (AutomaticLanesSpreadFastModels...)
  negative_lanes.lanes = -1;
  EXPECT_NE(bad(negative_lanes).find("lanes must be >= 1"), std::string::npos);
  EngineOptions bad_preferred;
  bad_preferred.max_batch_size = 8;
  bad_preferred.preferred_batch_sizes = {16};
  EXPECT_NE(bad(bad_preferred).find("preferred batch size 16"), std::string::npos);
  EngineOptions batch_without_axis;
  batch_without_axis.max_batch_size = 4;
  EXPECT_NE(bad(batch_without_axis, FakeSpec({})).find("no batch axis"), std::string::npos);
  EngineOptions no_queue;
  no_queue.max_queue_size = 0;
  EXPECT_NE(bad(no_queue).find("max_queue_size"), std::string::npos);

  EngineOptions defaults;
  defaults.cores = 4;
  defaults.lanes = 2;
  auto created = Engine::Create(FakeSpec(), factory, defaults);
  ASSERT_TRUE(created.ok());
  const EngineOptions& resolved = created.value()->options();
  EXPECT_EQ(resolved.threads_per_lane, 2);
  EXPECT_EQ(resolved.max_batch_size, 16);
  EXPECT_EQ(resolved.preferred_batch_sizes, (std::vector<int64_t>{1, 4, 8, 16}));
}

TEST(Engine, WarmUpRunsAFullBatchAndGivesFastModelsOneThreadPerLane) {
  auto state = std::make_shared<FakeState>();
  auto factory = [state]() -> Result<std::unique_ptr<Executor>> {
    return std::unique_ptr<Executor>(std::make_unique<FakeExecutor>(state));
  };
  EngineOptions options;
  options.cores = 4;
  options.warm_up = true;
  auto fast = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  EXPECT_EQ(fast.value()->options().threads_per_lane, 1);  // microseconds per batch
  {
    std::lock_guard<std::mutex> lock(state->mutex);
    EXPECT_EQ(state->batch_rows, (std::vector<int64_t>{16, 16}));  // warm-up, then timed
  }
  state->run_sleep_us = 2 * kSmallBatchUs;  // a slow model keeps cores / lanes threads
  auto slow = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(slow.ok());
  EXPECT_EQ(slow.value()->options().threads_per_lane, 4);
  state->run_sleep_us = 0;
  options.threads_per_lane = 4;  // an explicit choice is kept
  auto explicit_threads = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(explicit_threads.ok());
  EXPECT_EQ(explicit_threads.value()->options().threads_per_lane, 4);

  state->fail_with = Status::RuntimeError("no warm-up for you");
  options.threads_per_lane = 0;
  auto failed = Engine::Create(FakeSpec(), factory, options);
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(failed.status().message(), "no warm-up for you");
}

TEST(Engine, AutomaticLanesSpreadFastModelsOverHalfTheCores) {
  auto state = std::make_shared<FakeState>();
  std::atomic<int> executors{0};
  auto factory = [state, &executors]() -> Result<std::unique_ptr<Executor>> {
    ++executors;
    return std::unique_ptr<Executor>(std::make_unique<FakeExecutor>(state));
  };
  EngineOptions options;
  options.lanes = 0;
  options.cores = 16;
  options.warm_up = true;
  auto fast = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(fast.ok()) << fast.status().ToString();
  EXPECT_EQ(fast.value()->options().lanes, 8);
  EXPECT_EQ(fast.value()->options().threads_per_lane, 1);
  EXPECT_EQ(executors.load(), 8);  // one VM per lane

  options.cores = 2;  // this machine's size: one lane, as before
  auto two_cores = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(two_cores.ok());
  EXPECT_EQ(two_cores.value()->options().lanes, 1);

  options.cores = 16;
  options.threads_per_lane = 2;  // an explicit thread count is kept; lanes fill half the cores
  auto explicit_threads = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(explicit_threads.ok());
  EXPECT_EQ(explicit_threads.value()->options().lanes, 4);

  // Slow on a team (a cold or contended OpenMP team) but fast on one thread: still small.
  state->team_sleep_us = 3 * kSmallBatchUs;
  state->teams.clear();
  auto slow_team = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(slow_team.ok());
  EXPECT_EQ(slow_team.value()->options().lanes, 4);  // 16 cores / 2 / the 2 threads asked for
  {
    std::lock_guard<std::mutex> lock(state->mutex);
    // Warm-up and timing on the lane's two threads, then warm-up and timing on one.
    EXPECT_EQ(state->teams, (std::vector<int>{2, 2, 1, 1}));
  }
  state->team_sleep_us = 0;

  options.threads_per_lane = 0;
  state->run_sleep_us = 2 * kSmallBatchUs;  // a slow model: one lane with every core
  executors = 0;
  auto slow = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(slow.ok());
  EXPECT_EQ(slow.value()->options().lanes, 1);
  EXPECT_EQ(slow.value()->options().threads_per_lane, 16);
  EXPECT_EQ(executors.load(), 1);

  options.warm_up = false;  // nothing timed: one lane
  auto untimed = Engine::Create(FakeSpec(), factory, options);
  ASSERT_TRUE(untimed.ok());
  EXPECT_EQ(untimed.value()->options().lanes, 1);

  options.lanes = -1;
  auto negative = Engine::Create(FakeSpec(), factory, options);
  ASSERT_FALSE(negative.ok());
  EXPECT_NE(negative.status().message().find("or 0: chosen at warm-up"), std::string::npos);
}

#if defined(__linux__)
// Names of this process's threads, from /proc (what top -H and perf show).
std::vector<std::string> ThreadNames() {
  std::vector<std::string> names;
  for (const auto& task : std::filesystem::directory_iterator("/proc/self/task")) {
    std::ifstream comm(task.path() / "comm");
    std::string name;
    if (std::getline(comm, name)) names.push_back(name);
  }
  return names;
}

TEST(Engine, LaneThreadsAreNamedForProfilers) {
  EngineOptions options;
  options.lanes = 2;
  options.threads_per_lane = 1;
  Fixture f(options);
  const std::vector<std::string> names = ThreadNames();  // named by Create(), before it returns
  for (const char* want : {"ember-lane-0", "ember-lane-1"}) {
    EXPECT_NE(std::find(names.begin(), names.end(), want), names.end()) << want;
  }
}
#endif

TEST(Engine, AFailingExecutorFactoryFailsCreate) {
  auto created = Engine::Create(FakeSpec(), []() -> Result<std::unique_ptr<Executor>> {
    return Status::RuntimeError("no VM for you");
  }, EngineOptions{});
  ASSERT_FALSE(created.ok());
  EXPECT_EQ(created.status().message(), "no VM for you");
}

TEST(Engine, OutputsOutliveTheEngine) {
  Collector c;
  {
    Fixture f({});
    ASSERT_TRUE(Submit(*f.engine, 5, 2, c).ok());
    c.Wait(1);
  }
  ExpectOutputsFor(c.done[0], 2);  // the blocks keep their pool alive
}

TEST(Engine, SteadyStateAllocatesNothingFromTheSystem) {
  Fixture f({});
  auto run_many = [&](int n) {
    for (int i = 0; i < n; ++i) {
      Collector c;
      ASSERT_TRUE(Submit(*f.engine, i % 7, 1 + i % 5, c).ok());
      c.Wait(1);
      ExpectOutputsFor(c.done[0], 1 + i % 5);
    }  // the outputs die here and their blocks return to the pool
  };
  run_many(50);
  const memory::PoolStats warm = f.engine->pool_stats();
  run_many(200);
  const memory::PoolStats after = f.engine->pool_stats();
  EXPECT_EQ(after.allocations, warm.allocations);
  EXPECT_EQ(after.misses, warm.misses);
  EXPECT_GT(after.hits, warm.hits + 200);  // every request still took blocks: from the free lists
  EXPECT_EQ(after.bytes_in_use, 0u);
}

TEST(Engine, ManyThreadsManyLanesEveryRequestCompletesOnceWithItsRows) {
  EngineOptions options;
  options.lanes = 2;
  options.threads_per_lane = 1;
  options.max_queue_delay_us = 200;
  Fixture f(options);
  constexpr int kThreads = 8, kPerThread = 300;
  Collector c;
  std::atomic<int> refused{0};
  std::vector<std::thread> clients;
  for (int t = 0; t < kThreads; ++t) {
    clients.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int tag = t * kPerThread + i;
        if (!Submit(*f.engine, tag, 1 + tag % 3, c).ok()) ++refused;
      }
    });
  }
  for (std::thread& client : clients) client.join();
  c.Wait(kThreads * kPerThread);
  EXPECT_EQ(refused.load(), 0);
  std::vector<int> seen;
  for (const auto& d : c.done) {
    ExpectOutputsFor(d, 1 + d.tag % 3);
    seen.push_back(d.tag);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << "a request completed twice";
  const MetricsSnapshot m = f.engine->metrics();
  EXPECT_EQ(m.requests, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(m.successes, m.requests);
  EXPECT_EQ(m.total_us.count, m.requests);
  f.engine->Close(true);
}

}  // namespace
}  // namespace ember::engine
