// LockSpinning / SpinLocked: mutual exclusion under contention (a counter that non-atomic
// increments would lose updates on), and the fallback to a blocking lock when the holder keeps
// the mutex longer than the spin lasts.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "ember/cpu_relax.h"

namespace ember {
namespace {

TEST(LockSpinning, ExcludesLikeALock) {
  std::mutex mutex;
  int64_t counter = 0;  // guarded by mutex
  constexpr int kThreads = 4, kIncrements = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kIncrements; ++i) {
        const auto lock = SpinLocked(mutex);
        counter = counter + 1;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(counter, int64_t{kThreads} * kIncrements);
}

TEST(LockSpinning, BlocksWhenTheHolderStaysLongerThanTheSpin) {
  std::mutex mutex;
  std::unique_lock<std::mutex> held(mutex);
  std::atomic<bool> acquired{false}, released{false};
  std::thread waiter([&] {
    std::unique_lock<std::mutex> lock(mutex, std::defer_lock);
    LockSpinning(lock, /*attempts=*/4);  // spins out long before the holder lets go
    EXPECT_TRUE(released.load());        // so it got the mutex only after the release
    acquired = true;
  });
  for (int i = 0; i < 1000; ++i) std::this_thread::yield();  // let the waiter spin out
  EXPECT_FALSE(acquired.load());
  released = true;
  held.unlock();
  waiter.join();
  EXPECT_TRUE(acquired.load());
}

}  // namespace
}  // namespace ember
