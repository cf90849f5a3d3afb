#include "ember/memory_pool.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>

#include "ember/cpu_relax.h"

namespace ember::memory {

SystemAllocator SystemAllocator::Default() {
  return SystemAllocator{
      [](size_t nbytes) { return std::aligned_alloc(MemoryPool::kAlignmentBytes, nbytes); },
      [](void* ptr) { std::free(ptr); }};
}

Block::~Block() { Reset(); }

Block::Block(Block&& other) noexcept
    : pool_(std::move(other.pool_)),
      data_(std::exchange(other.data_, nullptr)),
      capacity_bytes_(std::exchange(other.capacity_bytes_, 0)) {}

Block& Block::operator=(Block&& other) noexcept {
  if (this != &other) {
    Reset();
    pool_ = std::move(other.pool_);
    data_ = std::exchange(other.data_, nullptr);
    capacity_bytes_ = std::exchange(other.capacity_bytes_, 0);
  }
  return *this;
}

void Block::Reset() noexcept {
  if (data_ != nullptr) pool_->Return(data_, capacity_bytes_);
  data_ = nullptr;
  capacity_bytes_ = 0;
  pool_.reset();
}

std::shared_ptr<MemoryPool> MemoryPool::Create(size_t max_cached_bytes, SystemAllocator allocator) {
  return std::shared_ptr<MemoryPool>(new MemoryPool(max_cached_bytes, std::move(allocator)));
}

MemoryPool::MemoryPool(size_t max_cached_bytes, SystemAllocator allocator)
    : max_cached_bytes_(max_cached_bytes), allocator_(std::move(allocator)) {
  for (auto& list : free_lists_) list.reserve(8);
}

MemoryPool::~MemoryPool() { Trim(); }  // no Block can be alive: each holds a reference

size_t MemoryPool::CapacityFor(size_t nbytes) {
  if (nbytes > kMaxPooledBytes) return (nbytes + kAlignmentBytes - 1) / kAlignmentBytes * kAlignmentBytes;
  size_t capacity = kMinBlockBytes;
  while (capacity < nbytes) capacity <<= 1;
  return capacity;
}

int MemoryPool::ClassOf(size_t capacity_bytes) {
  if (capacity_bytes > kMaxPooledBytes) return -1;
  int index = 0;
  for (size_t size = kMinBlockBytes; size < capacity_bytes; size <<= 1) ++index;
  return index;
}

Result<Block> MemoryPool::Allocate(size_t nbytes) {
  const size_t capacity = CapacityFor(nbytes);
  const int size_class = ClassOf(capacity);
  {
    // Lanes and callers allocate and return blocks at once, each holding the lock briefly:
    // spinning first saves the futex sleep and wake-up (see LockSpinning).
    auto lock = SpinLocked(mutex_);
    if (size_class >= 0 && !free_lists_[static_cast<size_t>(size_class)].empty()) {
      const auto index = static_cast<size_t>(size_class);
      auto& list = free_lists_[index];
      void* data = list.back();
      list.pop_back();
      ++stats_.hits;
      stats_.bytes_cached -= capacity;
      stats_.bytes_in_use += capacity;
      stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
      Block block(shared_from_this(), data, capacity);
      if (capacity <= kGrowClassMaxBytes && list.size() < owned_blocks_[index] / 4) {
        const size_t extra = GrowthLocked(index, capacity);  // ahead of the peak
        lock.unlock();
        GrowClass(index, capacity, extra);
      }
      return block;
    }
    ++stats_.misses;
  }
  void* data = allocator_.allocate(capacity);  // outside the lock: may be slow
  std::unique_lock<std::mutex> lock(mutex_);
  if (data == nullptr) {
    ++stats_.failures;
    return Status::RuntimeError("out of memory: the memory pool could not allocate a " +
                                std::to_string(capacity) + "-byte block (for " +
                                std::to_string(nbytes) + " bytes)");
  }
  ++stats_.allocations;
  stats_.bytes_in_use += capacity;
  stats_.peak_bytes_in_use = std::max(stats_.peak_bytes_in_use, stats_.bytes_in_use);
  if (size_class >= 0) {
    const size_t index = static_cast<size_t>(size_class);
    const bool grow = owned_blocks_[index] > 0 && capacity <= kGrowClassMaxBytes;
    const size_t extra = grow ? GrowthLocked(index, capacity) : 0;
    ++owned_blocks_[index];
    if (grow) {
      lock.unlock();
      GrowClass(index, capacity, extra);
    }
  }
  return Block(shared_from_this(), data, capacity);
}

size_t MemoryPool::GrowthLocked(size_t index, size_t capacity) const {
  const size_t owned = owned_blocks_[index];
  const size_t slab = kGrowClassMaxBytes / capacity;  // >= 1 for a small class
  const size_t to_fill_slab = slab > owned + 1 ? slab - owned - 1 : 0;  // + the block asked for
  const size_t room = max_cached_bytes_ - std::min(max_cached_bytes_, stats_.bytes_cached);
  return std::min(std::max(std::min(owned, kMaxGrowBlocks), to_fill_slab), room / capacity);
}

void MemoryPool::GrowClass(size_t index, size_t capacity, size_t count) noexcept {
  std::vector<void*> grown;
  try {
    grown.reserve(count);
  } catch (...) {
    return;  // best effort: the block asked for was served already
  }
  for (size_t i = 0; i < count; ++i) {
    void* data = allocator_.allocate(capacity);
    if (data == nullptr) break;  // not a failure of any request: it simply grows less
    grown.push_back(data);
  }
  size_t kept = 0;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto& list = free_lists_[index];
    for (; kept < grown.size() && stats_.bytes_cached + capacity <= max_cached_bytes_; ++kept) {
      try {
        list.push_back(grown[kept]);
      } catch (...) {
        break;
      }
      ++stats_.allocations;
      ++owned_blocks_[index];
      stats_.bytes_cached += capacity;
    }
  }
  // What others' returns left no room for (or the list could not take), after unlocking.
  for (size_t i = kept; i < grown.size(); ++i) allocator_.release(grown[i]);
}

void MemoryPool::Return(void* data, size_t capacity_bytes) noexcept {
  const int size_class = ClassOf(capacity_bytes);
  {
    const auto lock = SpinLocked(mutex_);
    stats_.bytes_in_use -= capacity_bytes;
    if (size_class >= 0 && stats_.bytes_cached + capacity_bytes <= max_cached_bytes_) {
      try {
        free_lists_[static_cast<size_t>(size_class)].push_back(data);
        stats_.bytes_cached += capacity_bytes;
        return;
      } catch (...) {  // the list could not grow: free the block instead
      }
    }
    if (size_class >= 0) --owned_blocks_[static_cast<size_t>(size_class)];
  }
  allocator_.release(data);
}

PoolStats MemoryPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void MemoryPool::Trim() {
  std::array<std::vector<void*>, kNumClasses> cached;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    cached.swap(free_lists_);
    stats_.bytes_cached = 0;
    for (size_t i = 0; i < kNumClasses; ++i) owned_blocks_[i] -= cached[i].size();
  }
  for (auto& list : cached) {
    for (void* data : list) allocator_.release(data);
  }
}

}  // namespace ember::memory
