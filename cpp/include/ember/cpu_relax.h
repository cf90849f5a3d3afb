// CpuRelax: the body of a spin-wait loop. Tells the CPU this is a spin (saves power and frees the
// sibling hyperthread) without giving up the time slice. LockSpinning / SpinLocked: take a
// briefly-held mutex without sleeping on it first.
#pragma once

#include <mutex>

namespace ember {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Locks `lock`'s mutex, polling try_lock for a moment before blocking. For mutexes held a few
// microseconds at a time: there a futex sleep and wake-up (tens of microseconds on a VM) costs
// far more than waiting for the holder to finish.
template <typename Lockable>
void LockSpinning(Lockable& lock, int attempts = 64) {
  for (int i = 0; i < attempts; ++i) {
    if (lock.try_lock()) return;
    for (int k = 0; k < 8; ++k) CpuRelax();
  }
  lock.lock();
}

// `mutex` locked by LockSpinning, as a std::unique_lock (for lock_guard-like scopes).
inline std::unique_lock<std::mutex> SpinLocked(std::mutex& mutex) {
  std::unique_lock<std::mutex> lock(mutex, std::defer_lock);
  LockSpinning(lock);
  return lock;
}

}  // namespace ember
