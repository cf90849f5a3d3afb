#include "ember/result_slot.h"

#include <utility>

#include "ember/cpu_relax.h"

namespace ember::engine {

void ResultSlot::Complete(Status status, std::vector<OutputTensor> outputs) {
  WakeUp wake_up;
  {
    const auto lock = SpinLocked(mutex_);  // a lane: never sleep on the caller's brief hold
    status_ = std::move(status);
    outputs_ = std::move(outputs);
    wake_up = std::move(wake_up_);
    done_.store(true, std::memory_order_release);
  }
  if (wake_up) wake_up();
}

bool ResultSlot::WakeWhenDone(WakeUp wake_up) {
  const auto lock = SpinLocked(mutex_);
  if (done_.load(std::memory_order_relaxed)) return false;
  wake_up_ = std::move(wake_up);
  return true;
}

}  // namespace ember::engine
