#include "ember/memory_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <utility>
#include <vector>

namespace ember::memory {
namespace {

// A system allocator with a byte budget: allocations beyond it fail. Counts live bytes so that
// tests can check that nothing leaks.
struct BudgetAllocator {
  size_t budget_bytes;
  std::shared_ptr<std::atomic<size_t>> live = std::make_shared<std::atomic<size_t>>(0);
  std::shared_ptr<std::atomic<size_t>> total = std::make_shared<std::atomic<size_t>>(0);

  SystemAllocator Make() {
    auto live_bytes = live;
    auto total_bytes = total;
    const size_t budget = budget_bytes;
    return SystemAllocator{
        [live_bytes, total_bytes, budget](size_t nbytes) -> void* {
          if (*total_bytes + nbytes > budget) return nullptr;
          *total_bytes += nbytes;
          void* ptr = std::aligned_alloc(MemoryPool::kAlignmentBytes, nbytes + 64);
          // Remember the size in front of the block so that release can account for it.
          *static_cast<size_t*>(ptr) = nbytes;
          *live_bytes += nbytes;
          return static_cast<char*>(ptr) + 64;
        },
        [live_bytes, total_bytes](void* ptr) {
          void* base = static_cast<char*>(ptr) - 64;
          const size_t nbytes = *static_cast<size_t*>(base);
          *live_bytes -= nbytes;
          *total_bytes -= nbytes;
          std::free(base);
        }};
  }
};

TEST(MemoryPool, BlocksAreAlignedAndRoundedToTheirSizeClass) {
  auto pool = MemoryPool::Create();
  for (size_t nbytes : {size_t{1}, size_t{64}, size_t{65}, size_t{1000}, size_t{4096}}) {
    auto block = pool->Allocate(nbytes);
    ASSERT_TRUE(block.ok());
    EXPECT_EQ(reinterpret_cast<uintptr_t>(block.value().data()) % MemoryPool::kAlignmentBytes, 0u);
    EXPECT_EQ(block.value().capacity_bytes(), MemoryPool::CapacityFor(nbytes));
    EXPECT_GE(block.value().capacity_bytes(), nbytes);
  }
  EXPECT_EQ(MemoryPool::CapacityFor(65), 256u);
  EXPECT_EQ(MemoryPool::CapacityFor(257), 512u);
  EXPECT_EQ(MemoryPool::CapacityFor(1000), 1024u);
}

TEST(MemoryPool, ReleasedBlocksAreReusedAndCounted) {
  auto pool = MemoryPool::Create();
  void* first = nullptr;
  {
    auto block = pool->Allocate(1000);
    ASSERT_TRUE(block.ok());
    first = block.value().data();
    PoolStats s = pool->stats();
    EXPECT_EQ(s.bytes_in_use, 1024u);
    EXPECT_EQ(s.misses, 1u);
    EXPECT_EQ(s.allocations, 1u);
  }
  PoolStats s = pool->stats();
  EXPECT_EQ(s.bytes_in_use, 0u);
  EXPECT_EQ(s.bytes_cached, 1024u);
  auto again = pool->Allocate(900);  // same class
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value().data(), first);
  s = pool->stats();
  EXPECT_EQ(s.hits, 1u);
  EXPECT_EQ(s.allocations, 1u);
  EXPECT_EQ(s.peak_bytes_in_use, 1024u);
}

TEST(MemoryPool, SteadyStateMakesNoSystemAllocations) {
  auto pool = MemoryPool::Create();
  const std::vector<size_t> request{256, 4096, 4096, 100000, 12};  // one "request"'s buffers
  auto serve = [&] {
    std::vector<Block> blocks;
    for (size_t nbytes : request) {
      auto block = pool->Allocate(nbytes);
      ASSERT_TRUE(block.ok());
      blocks.push_back(std::move(block).value());
    }
  };
  serve();
  const uint64_t warm = pool->stats().allocations;
  for (int i = 0; i < 1000; ++i) serve();
  PoolStats s = pool->stats();
  EXPECT_EQ(s.allocations, warm);
  EXPECT_EQ(s.hits, 1000u * request.size());
  EXPECT_EQ(s.bytes_in_use, 0u);
}

TEST(MemoryPool, SmallClassesGrowGeometricallyBigOnesOneBlockAtATime) {
  auto pool = MemoryPool::Create();
  std::vector<Block> held;
  auto take = [&](size_t nbytes) {
    auto block = pool->Allocate(nbytes);
    ASSERT_TRUE(block.ok());
    held.push_back(std::move(block).value());
  };
  constexpr size_t kLargest = MemoryPool::kGrowClassMaxBytes;  // a slab of one block
  const size_t largest = kLargest - 1000;
  take(largest);  // first block of its class: just it
  EXPECT_EQ(pool->stats().allocations, 1u);
  take(largest);  // a miss with 1 owned: it and 1 spare
  EXPECT_EQ(pool->stats().allocations, 3u);
  EXPECT_EQ(pool->stats().bytes_cached, kLargest);
  take(largest);  // the spare (0 free of 3: a quarter of 3 rounds down to 0, so no growth)
  EXPECT_EQ(pool->stats().allocations, 3u);
  EXPECT_EQ(pool->stats().misses, 2u);
  take(largest);  // a miss with 3 owned: it and 3 spares
  EXPECT_EQ(pool->stats().allocations, 7u);
  EXPECT_EQ(pool->stats().bytes_cached, 3u * kLargest);
  take(largest);  // 2 of 7 free, then 1: at least 7 / 4 = 1 free, nothing new
  take(largest);
  EXPECT_EQ(pool->stats().allocations, 7u);
  take(largest);  // 0 of 7 free (< 1): 7 more, ahead of the next miss
  EXPECT_EQ(pool->stats().allocations, 14u);
  EXPECT_EQ(pool->stats().bytes_cached, 7u * kLargest);
  EXPECT_EQ(pool->stats().misses, 3u);

  take(1000);  // a 1 KiB class: its first block alone, then a slab of 64 on its first growth
  EXPECT_EQ(pool->stats().allocations, 15u);
  take(1000);
  EXPECT_EQ(pool->stats().allocations, 15u + 63u);
  EXPECT_EQ(pool->stats().bytes_cached, 7u * kLargest + 62u * 1024u);

  const size_t big = MemoryPool::kGrowClassMaxBytes * 2;
  take(big);
  take(big);
  PoolStats s = pool->stats();
  EXPECT_EQ(s.allocations, 15u + 63u + 2u);  // one each
  EXPECT_EQ(s.bytes_cached, 7u * kLargest + 62u * 1024u);
  held.clear();
  pool->Trim();
  EXPECT_EQ(pool->stats().bytes_cached, 0u);
  take(largest);  // trimmed: the class owns nothing again, so it starts over with one block
  EXPECT_EQ(pool->stats().allocations, 15u + 63u + 3u);
}

TEST(MemoryPool, OversizedBlocksAreFreedOnRelease) {
  BudgetAllocator system{size_t{1} << 34};
  auto pool = MemoryPool::Create(SIZE_MAX, system.Make());
  const size_t big = MemoryPool::kMaxPooledBytes + 1;
  {
    auto block = pool->Allocate(big);
    ASSERT_TRUE(block.ok());
    EXPECT_EQ(block.value().capacity_bytes(), MemoryPool::CapacityFor(big));
  }
  EXPECT_EQ(*system.live, 0u);
  EXPECT_EQ(pool->stats().bytes_cached, 0u);
}

TEST(MemoryPool, CachedBytesAreCapped) {
  BudgetAllocator system{size_t{1} << 30};
  auto pool = MemoryPool::Create(/*max_cached_bytes=*/2048, system.Make());
  {
    std::vector<Block> blocks;
    for (int i = 0; i < 4; ++i) blocks.push_back(pool->Allocate(1024).value());
  }
  EXPECT_EQ(pool->stats().bytes_cached, 2048u);
  EXPECT_EQ(*system.live, 2048u);  // the other two were freed
  pool->Trim();
  EXPECT_EQ(*system.live, 0u);
  EXPECT_EQ(pool->stats().bytes_cached, 0u);
}

// ExecuTorch-style: grow the system budget from nothing until an operation that needs several
// blocks succeeds. Every failing budget must give an error (never a crash or a partial success)
// and leave nothing in use; the pool must stay usable afterwards.
TEST(MemoryPool, AllocationFailureAtEveryBudgetIsCleanAndRecoverable) {
  const std::vector<size_t> needs{64, 4096, 1000, 70000};
  size_t needed_bytes = 0;
  for (size_t n : needs) needed_bytes += MemoryPool::CapacityFor(n);
  bool succeeded = false;
  for (size_t budget = 0; budget <= needed_bytes; budget += 64) {
    BudgetAllocator system{budget};
    auto pool = MemoryPool::Create(SIZE_MAX, system.Make());
    Status failure = Status::Ok();
    size_t served = 0;
    {
      std::vector<Block> blocks;
      for (size_t n : needs) {
        auto block = pool->Allocate(n);
        if (!block.ok()) {
          failure = block.status();
          break;
        }
        blocks.push_back(std::move(block).value());
        ++served;
      }
    }
    EXPECT_EQ(pool->stats().bytes_in_use, 0u);
    if (failure.ok()) {
      EXPECT_EQ(budget, needed_bytes) << "succeeded below the bytes it needs";
      succeeded = true;
      break;
    }
    EXPECT_EQ(failure.code(), StatusCode::kRuntimeError);
    EXPECT_NE(failure.message().find("out of memory"), std::string::npos) << failure.message();
    EXPECT_GE(pool->stats().failures, 1u);
    // Recoverable: blocks released after the failure are served again from the cache.
    if (served > 0) {
      const uint64_t hits = pool->stats().hits;
      EXPECT_TRUE(pool->Allocate(needs[0]).ok());
      EXPECT_EQ(pool->stats().hits, hits + 1);
    }
    pool->Trim();
    EXPECT_EQ(*system.live, 0u) << "leak at budget " << budget;
  }
  EXPECT_TRUE(succeeded);
}

TEST(MemoryPool, BlocksMayOutliveEveryOtherPoolHandle) {
  Block block;
  {
    auto pool = MemoryPool::Create();
    block = pool->Allocate(128).value();
  }
  ASSERT_TRUE(static_cast<bool>(block));
  static_cast<char*>(block.data())[127] = 1;  // still valid memory (ASan would object)
}

TEST(MemoryPool, ConcurrentUseKeepsCountsExact) {
  auto pool = MemoryPool::Create();
  constexpr int kThreads = 4;
  constexpr int kRounds = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&pool, t] {
      for (int i = 0; i < kRounds; ++i) {
        auto block = pool->Allocate(static_cast<size_t>(64 << ((i + t) % 6)));
        ASSERT_TRUE(block.ok());
        static_cast<char*>(block.value().data())[0] = static_cast<char>(i);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  PoolStats s = pool->stats();
  EXPECT_EQ(s.hits + s.misses, static_cast<uint64_t>(kThreads * kRounds));
  EXPECT_EQ(s.bytes_in_use, 0u);
  // Bounded: the 4 classes used (256 B to 2 KiB) grow at most to a slab each plus doubling
  // for 4 threads, not once per round.
  EXPECT_LE(s.allocations, 4 * (MemoryPool::kGrowClassMaxBytes / 256) + 4u * kThreads * 2);
}

}  // namespace
}  // namespace ember::memory
