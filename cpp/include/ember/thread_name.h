// NameThread: labels a thread for top -H, perf and gdb ("ember-lane-0"), so a profile of a
// server shows which threads are ember's. Called by the thread's creator, so the name is set
// before Create() returns. Best effort: a no-op where unsupported.
#pragma once

#include <string>
#include <thread>

#if defined(__linux__)
#include <pthread.h>
#endif

namespace ember {

inline void NameThread(std::thread& thread, const std::string& name) {
#if defined(__linux__)
  constexpr size_t kMaxChars = 15;  // the kernel's limit, without the terminating NUL
  pthread_setname_np(thread.native_handle(), name.substr(0, kMaxChars).c_str());
#else
  (void)thread;
  (void)name;
#endif
}

}  // namespace ember
