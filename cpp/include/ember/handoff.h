// HandoffGate: wakes threads blocked on finished requests one at a time, each when the previous
// one blocks again, so that a thread is never woken while another holds the lock it needs next
// (in ember's bindings: the GIL). Without it, a batch of 64 finished requests wakes 64 Python
// threads at once; they pile onto the GIL and each sleeps and wakes twice per request.
//
// The woken thread holds a baton until its next Release(): in a server that calls the engine in
// a loop, that is the moment it gives the GIL up again. A holder that does not come back within
// `stale_after` (it went on to other work, or exited) loses the baton to a watchdog thread that
// wakes the next finished caller, so no finished request waits on a thread that is gone.
//
// Thread-safety: every method may be called from any thread. A thread's baton is thread-local
// and per gate; a thread that blocks on two gates in turn keeps only the last one's.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

namespace ember::engine {

class HandoffGate {
 public:
  // One blocking call's wake-up: created per call, completed once by whoever finishes it.
  class Ticket {
   public:
    // True once this ticket's thread may go (for polling before Wait).
    bool woken() const { return woken_flag_.load(std::memory_order_acquire); }

   private:
    friend class HandoffGate;
    std::atomic<bool> woken_flag_{false};
    std::mutex mutex_;
    std::condition_variable cv_;
    bool woken_ = false;
    uint64_t baton_ = 0;  // the baton generation it was woken with
  };

  explicit HandoffGate(std::chrono::microseconds stale_after = std::chrono::microseconds(500));
  ~HandoffGate();  // wakes every ticket still queued, then joins the watchdog
  HandoffGate(const HandoffGate&) = delete;
  HandoffGate& operator=(const HandoffGate&) = delete;

  // The ticket's request finished (never after destruction began): wake its thread now when no woken thread holds the baton,
  // otherwise queue it for the holder's next Release (or the watchdog).
  void Complete(const std::shared_ptr<Ticket>& ticket);

  // The calling thread is about to block (its lock already given up): if it holds the baton,
  // pass it to the next finished ticket, or put it down when none is queued.
  void Release();

  // Blocks until the ticket is woken; the caller then holds the baton.
  void Wait(Ticket& ticket);

  struct Stats {
    uint64_t woken_at_once = 0;     // completions that found no holder
    uint64_t handed_off = 0;        // batons passed by Release
    uint64_t woken_by_watchdog = 0; // batons taken from a holder that did not come back in time
  };
  Stats stats() const;

 private:
  using Clock = std::chrono::steady_clock;
  void GiveBatonLocked(Ticket& ticket, Clock::time_point now);
  std::shared_ptr<Ticket> NextLocked(Clock::time_point now);  // pops the next, gives it the baton
  static void Wake(Ticket& ticket);
  void Watch();

  const std::chrono::microseconds stale_after_;
  mutable std::mutex mutex_;
  std::condition_variable watchdog_cv_;
  std::deque<std::shared_ptr<Ticket>> finished_;  // woken in order; non-empty implies held_
  bool held_ = false;                             // a woken thread holds the baton
  uint64_t baton_ = 0;                            // generation of the current baton
  Clock::time_point handed_at_{};
  bool stopping_ = false;
  Stats stats_;
  std::thread watchdog_;  // last: started once every member above exists
};

}  // namespace ember::engine
