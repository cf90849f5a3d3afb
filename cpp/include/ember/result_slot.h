// ResultSlot: one request's outcome, left by the lane that finishes it for a caller that polls
// for it and asks to be woken only when polling is not enough. The asyncio binding uses it so
// that a task which finds its outputs ready after one event-loop round needs no future at all.
//
// Thread-safety: Complete() once, from any thread; the other methods from the caller's side.
// WakeWhenDone() and Complete() may race: exactly one of them sees the other, so the wake-up
// either runs once (after the outcome is visible) or is refused and never runs.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <vector>

#include "ember/engine.h"
#include "ember/status.h"

namespace ember::engine {

class ResultSlot {
 public:
  using WakeUp = std::function<void()>;

  // Stores the outcome, then runs the wake-up if one was attached (on this thread, unlocked).
  void Complete(Status status, std::vector<OutputTensor> outputs);

  // Whether Complete() has run; once true, status() and TakeOutputs() may be read.
  bool done() const { return done_.load(std::memory_order_acquire); }

  // Runs `wake_up` when the outcome arrives; false, without keeping or running it, if it has
  // arrived already. At most one wake-up may be attached.
  bool WakeWhenDone(WakeUp wake_up);

  // After done(): the request's status, and its outputs (moved out: once).
  const Status& status() const { return status_; }
  std::vector<OutputTensor> TakeOutputs() { return std::move(outputs_); }

 private:
  std::mutex mutex_;  // guards wake_up_, and orders the outcome's writes before done_
  Status status_;
  std::vector<OutputTensor> outputs_;
  WakeUp wake_up_;
  std::atomic<bool> done_{false};
};

}  // namespace ember::engine
