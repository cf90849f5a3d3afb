// MemoryPool: size-class free lists of 64-byte-aligned host blocks, for batch assembly and
// outputs on the request path, so that a steady stream of requests allocates nothing from the
// system.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "ember/status.h"

namespace ember::memory {

// Counters of one pool. bytes_* count block capacities (the size class), not requested sizes.
struct PoolStats {
  size_t bytes_in_use = 0;       // held by live Blocks
  size_t peak_bytes_in_use = 0;  // the most bytes_in_use ever reached
  size_t bytes_cached = 0;       // in the free lists, ready for reuse
  uint64_t hits = 0;             // Allocate() served from a free list
  uint64_t misses = 0;           // Allocate() that had to ask the system allocator
  uint64_t allocations = 0;      // successful system allocations: misses, and spare blocks
                                 // that small classes grow by (see MemoryPool)
  uint64_t failures = 0;         // system allocations that returned nothing
};

// Where a pool gets its memory: `allocate(nbytes)` returns kAlignmentBytes-aligned memory or null;
// `release` frees it. Replaceable so that tests can make allocation fail.
struct SystemAllocator {
  std::function<void*(size_t nbytes)> allocate;
  std::function<void(void* ptr)> release;
  static SystemAllocator Default();  // std::aligned_alloc / std::free
};

class MemoryPool;

// A block from a pool: move-only; returns its memory to the pool (or frees it, for oversized
// blocks) when destroyed. Keeps the pool alive, so blocks may outlive every other pool handle.
class Block {
 public:
  Block() = default;
  ~Block();
  Block(Block&& other) noexcept;
  Block& operator=(Block&& other) noexcept;
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  void* data() const { return data_; }
  size_t capacity_bytes() const { return capacity_bytes_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  friend class MemoryPool;
  Block(std::shared_ptr<MemoryPool> pool, void* data, size_t capacity_bytes)
      : pool_(std::move(pool)), data_(data), capacity_bytes_(capacity_bytes) {}
  void Reset() noexcept;

  std::shared_ptr<MemoryPool> pool_;
  void* data_ = nullptr;
  size_t capacity_bytes_ = 0;
};

// Size classes are powers of two from kMinBlockBytes to kMaxPooledBytes; a request is rounded up
// to its class. Requests above kMaxPooledBytes get an exact-size block freed on release (a miss
// each time). Cached bytes are capped by `max_cached_bytes`: a block released beyond the cap is
// freed instead of cached.
//
// Small classes (at most kGrowClassMaxBytes) grow in bulk, and ahead of demand. The first block
// of a class is allocated alone. When a class that owns n blocks misses, or a hit leaves it fewer
// than n / 4 (rounded down) free ones, it allocates spare blocks into its free list (within the
// cache cap): at least min(n, kMaxGrowBlocks), and on its first growth enough to fill a slab of
// kGrowClassMaxBytes (255 more 256-byte blocks; one more 64 KiB block). So a server's pool
// settles early instead of allocating again whenever a rare peak of requests in flight beats the
// last one: with 64 callers using ~64 blocks of one class, growth by doubling alone reached 64
// blocks and grew again, late, in about 1 run of 5 of test_engine_stress.py. Big classes grow
// one block at a time.
//
// Thread-safety: every method may be called from any thread; one mutex guards the free lists and
// stats, held only for list operations (never while the system allocator runs).
class MemoryPool : public std::enable_shared_from_this<MemoryPool> {
 public:
  static constexpr size_t kAlignmentBytes = 64;
  // 256, not 64: requests of a few small rows share one class, so a server's mix of them
  // reaches its steady state (no new blocks) quickly instead of one class at a time.
  static constexpr size_t kMinBlockBytes = 256;
  static constexpr size_t kMaxPooledBytes = size_t{1} << 30;
  static constexpr size_t kNumClasses = 23;  // 2^8 .. 2^30
  static constexpr size_t kGrowClassMaxBytes = size_t{64} << 10;
  static constexpr size_t kMaxGrowBlocks = 64;

  static std::shared_ptr<MemoryPool> Create(size_t max_cached_bytes = SIZE_MAX,
                                            SystemAllocator allocator = SystemAllocator::Default());
  ~MemoryPool();
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;

  // A block of at least `nbytes` (contents unspecified). Fails with a RuntimeError status naming
  // the size when the system allocator has no memory; the pool stays usable.
  Result<Block> Allocate(size_t nbytes);

  PoolStats stats() const;

  // Frees every cached block (blocks in use are unaffected).
  void Trim();

  // The capacity Allocate(nbytes) would give: the size class, or nbytes rounded up to the
  // alignment above kMaxPooledBytes.
  static size_t CapacityFor(size_t nbytes);

 private:
  friend class Block;
  MemoryPool(size_t max_cached_bytes, SystemAllocator allocator);
  void Return(void* data, size_t capacity_bytes) noexcept;
  static int ClassOf(size_t capacity_bytes);  // -1 for oversized
  // How many spare blocks a small class grows by (see the class comment), within the cache cap.
  // Called with mutex_ held.
  size_t GrowthLocked(size_t index, size_t capacity) const;
  // Allocates up to `count` spare blocks of one class into its free list (best effort).
  void GrowClass(size_t index, size_t capacity, size_t count) noexcept;

  const size_t max_cached_bytes_;
  const SystemAllocator allocator_;
  mutable std::mutex mutex_;
  std::array<std::vector<void*>, kNumClasses> free_lists_;
  std::array<size_t, kNumClasses> owned_blocks_{};  // per class: in use + cached
  PoolStats stats_;
};

}  // namespace ember::memory
