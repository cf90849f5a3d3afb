// CpuRelax: the body of a spin-wait loop. Tells the CPU this is a spin (saves power and frees the
// sibling hyperthread) without giving up the time slice.
#pragma once

namespace ember {

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace ember
