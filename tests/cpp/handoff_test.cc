// HandoffGate: finished callers are woken one at a time, when the baton holder blocks again, by
// the watchdog when the holder does not come back, and all of them when the gate goes away.
#include "ember/handoff.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

namespace ember::engine {
namespace {

using Ticket = HandoffGate::Ticket;
using std::chrono::microseconds;

// Long enough that the watchdog never steps in during a test that does not wait for it.
constexpr microseconds kNeverStale{60'000'000};

// Makes the calling thread the baton holder: a completion with no holder wakes it at once.
void TakeBaton(HandoffGate& gate) {
  auto ticket = std::make_shared<Ticket>();
  gate.Complete(ticket);
  ASSERT_TRUE(ticket->woken());
  gate.Wait(*ticket);
}

TEST(HandoffGate, WakesAtOnceWhenNobodyHoldsTheBaton) {
  HandoffGate gate(kNeverStale);
  auto ticket = std::make_shared<Ticket>();
  EXPECT_FALSE(ticket->woken());
  gate.Complete(ticket);
  EXPECT_TRUE(ticket->woken());
  gate.Wait(*ticket);  // returns: already woken
  EXPECT_EQ(gate.stats().woken_at_once, 1u);
}

TEST(HandoffGate, QueuesWhileHeldAndHandsOverInOrderOnRelease) {
  HandoffGate gate(kNeverStale);
  TakeBaton(gate);
  auto first = std::make_shared<Ticket>();
  auto second = std::make_shared<Ticket>();
  gate.Complete(first);
  gate.Complete(second);
  EXPECT_FALSE(first->woken());
  EXPECT_FALSE(second->woken());

  gate.Release();  // this thread blocks next: the baton goes to the first finished ticket
  EXPECT_TRUE(first->woken());
  EXPECT_FALSE(second->woken());
  gate.Release();  // no longer the holder: nothing moves
  EXPECT_FALSE(second->woken());

  std::thread holder([&] {
    gate.Wait(*first);
    gate.Release();
  });
  holder.join();
  EXPECT_TRUE(second->woken());
  EXPECT_EQ(gate.stats().handed_off, 2u);
  EXPECT_EQ(gate.stats().woken_by_watchdog, 0u);
}

TEST(HandoffGate, ReleaseWithNothingFinishedPutsTheBatonDown) {
  HandoffGate gate(kNeverStale);
  TakeBaton(gate);
  gate.Release();
  auto next = std::make_shared<Ticket>();
  gate.Complete(next);  // nobody holds it now: woken at once
  EXPECT_TRUE(next->woken());
  EXPECT_EQ(gate.stats().woken_at_once, 2u);
}

TEST(HandoffGate, WatchdogWakesTheNextWhenTheHolderDoesNotComeBack) {
  HandoffGate gate(microseconds(1000));
  TakeBaton(gate);  // and never releases it
  auto waiting = std::make_shared<Ticket>();
  gate.Complete(waiting);
  gate.Wait(*waiting);  // returns only because the watchdog woke it
  EXPECT_EQ(gate.stats().woken_by_watchdog, 1u);
}

TEST(HandoffGate, AStaleHolderReleasingDoesNotHandOverTwice) {
  HandoffGate gate(microseconds(1000));
  TakeBaton(gate);  // the main thread's baton goes stale below
  auto rescued = std::make_shared<Ticket>();
  gate.Complete(rescued);
  std::thread rescued_thread([&] { gate.Wait(*rescued); });  // woken by the watchdog
  rescued_thread.join();
  ASSERT_EQ(gate.stats().woken_by_watchdog, 1u);

  // The woken thread has exited holding the baton; the watchdog stays the only way on.
  auto third = std::make_shared<Ticket>();
  gate.Complete(third);
  gate.Release();  // the main thread's stale baton: ignored
  EXPECT_EQ(gate.stats().handed_off, 0u);
  gate.Wait(*third);
  EXPECT_EQ(gate.stats().woken_by_watchdog, 2u);
}

TEST(HandoffGate, DestructionWakesEveryQueuedTicket) {
  std::vector<std::shared_ptr<Ticket>> queued;
  {
    HandoffGate gate(kNeverStale);
    TakeBaton(gate);
    for (int i = 0; i < 5; ++i) {
      queued.push_back(std::make_shared<Ticket>());
      gate.Complete(queued.back());
    }
    for (const auto& ticket : queued) EXPECT_FALSE(ticket->woken());
  }
  for (const auto& ticket : queued) EXPECT_TRUE(ticket->woken());
}

// Callers block in a loop while completer threads finish their tickets in random order: every
// call returns, and at most one thread at a time holds a baton it was handed.
TEST(HandoffGate, ManyCallersAndCompletersAllReturn) {
  constexpr int kCallers = 16;
  constexpr int kCalls = 400;
  constexpr int kCompleters = 3;
  HandoffGate gate(microseconds(200));

  std::mutex mutex;
  std::vector<std::shared_ptr<Ticket>> pending;
  std::atomic<bool> stop{false};
  std::vector<std::thread> completers;
  for (int c = 0; c < kCompleters; ++c) {
    completers.emplace_back([&, c] {
      std::mt19937 rng(static_cast<unsigned>(c));
      while (!stop.load()) {
        std::shared_ptr<Ticket> ticket;
        {
          std::lock_guard<std::mutex> lock(mutex);
          if (!pending.empty()) {
            const size_t i = rng() % pending.size();
            ticket = pending[i];
            pending[i] = pending.back();
            pending.pop_back();
          }
        }
        if (ticket) {
          gate.Complete(ticket);
        } else {
          std::this_thread::yield();
        }
      }
    });
  }

  std::atomic<int> returned{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < kCallers; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < kCalls; ++i) {
        auto ticket = std::make_shared<Ticket>();
        {
          std::lock_guard<std::mutex> lock(mutex);
          pending.push_back(ticket);
        }
        gate.Release();
        gate.Wait(*ticket);
        returned.fetch_add(1);
      }
      gate.Release();
    });
  }
  for (auto& caller : callers) caller.join();
  stop.store(true);
  for (auto& completer : completers) completer.join();

  EXPECT_EQ(returned.load(), kCallers * kCalls);
  const HandoffGate::Stats stats = gate.stats();
  EXPECT_EQ(stats.woken_at_once + stats.handed_off + stats.woken_by_watchdog,
            static_cast<uint64_t>(kCallers * kCalls));
}

}  // namespace
}  // namespace ember::engine
