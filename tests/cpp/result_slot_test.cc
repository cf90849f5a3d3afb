// ResultSlot: a wake-up attached before the outcome runs once, after it is visible; one attached
// after is refused and never runs; racing the two from two threads, exactly one of those happens.
#include "ember/result_slot.h"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "ember/memory_pool.h"

namespace ember::engine {
namespace {

std::vector<OutputTensor> OneOutput(float value) {
  auto pool = memory::MemoryPool::Create();
  auto block = pool->Allocate(sizeof(float));
  EXPECT_TRUE(block.ok());
  *static_cast<float*>(block.value().data()) = value;
  OutputTensor out;
  out.block = std::make_shared<const memory::Block>(std::move(block).value());
  out.dtype = DLDataType{kDLFloat, 32, 1};
  out.shape = {1};
  return {out};
}

float ValueOf(const std::vector<OutputTensor>& outputs) {
  return *static_cast<const float*>(outputs.at(0).data());
}

TEST(ResultSlot, AWakeUpAttachedBeforeTheOutcomeRunsOnceAndSeesIt) {
  ResultSlot slot;
  int runs = 0;
  bool saw_done = false;
  ASSERT_TRUE(slot.WakeWhenDone([&] {
    ++runs;
    saw_done = slot.done();
  }));
  EXPECT_FALSE(slot.done());
  slot.Complete(Status::Ok(), OneOutput(2.5f));
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(saw_done);
  EXPECT_TRUE(slot.status().ok());
  EXPECT_EQ(ValueOf(slot.TakeOutputs()), 2.5f);
  EXPECT_TRUE(slot.TakeOutputs().empty());  // moved out once
}

TEST(ResultSlot, AWakeUpAttachedAfterTheOutcomeIsRefusedAndNeverRuns) {
  ResultSlot slot;
  slot.Complete(Status::DeadlineExceeded("too late"), {});
  int runs = 0;
  EXPECT_FALSE(slot.WakeWhenDone([&] { ++runs; }));
  EXPECT_EQ(runs, 0);
  ASSERT_TRUE(slot.done());
  EXPECT_EQ(slot.status().code(), StatusCode::kDeadlineExceeded);
}

TEST(ResultSlot, RacingCompleteAndWakeWhenDoneWakesExactlyWhenAccepted) {
  constexpr int kRounds = 2000;
  int accepted = 0, refused = 0;
  for (int round = 0; round < kRounds; ++round) {
    ResultSlot slot;
    std::atomic<int> runs{0};
    std::atomic<bool> go{false};
    std::thread lane([&] {
      while (!go.load(std::memory_order_acquire)) {
      }
      slot.Complete(Status::Ok(), OneOutput(static_cast<float>(round)));
    });
    go.store(true, std::memory_order_release);
    const bool attached = slot.WakeWhenDone([&] {
      EXPECT_EQ(ValueOf(slot.TakeOutputs()), static_cast<float>(round));  // visible when woken
      runs.fetch_add(1);
    });
    lane.join();
    if (attached) {
      ++accepted;
      EXPECT_EQ(runs.load(), 1) << "round " << round;
    } else {
      ++refused;
      EXPECT_EQ(runs.load(), 0) << "round " << round;
      EXPECT_EQ(ValueOf(slot.TakeOutputs()), static_cast<float>(round));
    }
  }
  EXPECT_EQ(accepted + refused, kRounds);
}

}  // namespace
}  // namespace ember::engine
