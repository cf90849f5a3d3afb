#include "ember/handoff.h"

#include <utility>

#include "ember/thread_name.h"

namespace ember::engine {
namespace {

// The baton this thread holds: which gate, and which generation (a stale one is ignored).
struct HeldBaton {
  const HandoffGate* gate = nullptr;
  uint64_t generation = 0;
};
thread_local HeldBaton held_baton;

}  // namespace

HandoffGate::HandoffGate(std::chrono::microseconds stale_after)
    : stale_after_(stale_after), watchdog_([this] { Watch(); }) {
  NameThread(watchdog_, "ember-handoff");
}

HandoffGate::~HandoffGate() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  watchdog_cv_.notify_one();
  watchdog_.join();  // wakes every queued ticket before it returns
}

void HandoffGate::Wake(Ticket& ticket) {
  {
    std::lock_guard<std::mutex> lock(ticket.mutex_);
    ticket.woken_ = true;
    ticket.woken_flag_.store(true, std::memory_order_release);
  }
  ticket.cv_.notify_one();
}

void HandoffGate::GiveBatonLocked(Ticket& ticket, Clock::time_point now) {
  ticket.baton_ = ++baton_;
  held_ = true;
  handed_at_ = now;
}

std::shared_ptr<HandoffGate::Ticket> HandoffGate::NextLocked(Clock::time_point now) {
  std::shared_ptr<Ticket> next = std::move(finished_.front());
  finished_.pop_front();
  GiveBatonLocked(*next, now);
  return next;
}

void HandoffGate::Complete(const std::shared_ptr<Ticket>& ticket) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (held_) {
      finished_.push_back(ticket);
      if (finished_.size() == 1) watchdog_cv_.notify_one();  // starts timing the holder
      return;
    }
    GiveBatonLocked(*ticket, Clock::now());
    ++stats_.woken_at_once;
  }
  Wake(*ticket);
}

void HandoffGate::Release() {
  if (held_baton.gate != this) return;
  const uint64_t generation = held_baton.generation;
  held_baton = HeldBaton{};
  std::shared_ptr<Ticket> next;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (generation != baton_ || !held_) return;  // the watchdog passed it on meanwhile
    if (finished_.empty()) {
      held_ = false;
      return;
    }
    next = NextLocked(Clock::now());
    ++stats_.handed_off;
  }
  Wake(*next);
}

void HandoffGate::Wait(Ticket& ticket) {
  {
    std::unique_lock<std::mutex> lock(ticket.mutex_);
    ticket.cv_.wait(lock, [&] { return ticket.woken_; });
  }
  held_baton = HeldBaton{this, ticket.baton_};
}

HandoffGate::Stats HandoffGate::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void HandoffGate::Watch() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    if (stopping_) {
      while (!finished_.empty()) {
        std::shared_ptr<Ticket> next = NextLocked(Clock::now());
        lock.unlock();
        Wake(*next);
        lock.lock();
      }
      return;
    }
    if (finished_.empty()) {
      watchdog_cv_.wait(lock);
      continue;
    }
    const Clock::time_point now = Clock::now();
    const Clock::time_point stale_at = handed_at_ + stale_after_;
    if (now < stale_at) {
      watchdog_cv_.wait_until(lock, stale_at);
      continue;
    }
    std::shared_ptr<Ticket> next = NextLocked(now);
    ++stats_.woken_by_watchdog;
    lock.unlock();
    Wake(*next);
    lock.lock();
  }
}

}  // namespace ember::engine
