// Bindings for ember::engine::Engine. Lanes never touch Python: a completion only moves the
// result into a Waiter (blocking run(), which waits with the GIL released), into an AsyncResult
// (asyncio; its task takes it), or with a future pointer into a CompletionQueue, where a Python
// thread (the futures dispatcher, or an asyncio loop's reader callback) resolves futures with the
// GIL. Outputs are numpy arrays viewing pooled blocks.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "ember/cpu_relax.h"
#include "ember/engine.h"
#include "ember/handoff.h"
#include "ember/model.h"
#include "ember/result_slot.h"
#include "errors.h"

namespace py = pybind11;

namespace ember::bindings {
namespace {

using engine::Engine;
using engine::OutputTensor;

// What turning outputs into a dict needs; plain C++ so that lanes may drop references to it.
struct OutputInfo {
  std::vector<std::string> names;
  std::vector<DLDataType> dtypes;
};

// numpy's type numbers (stable C API values) for the dtypes artifacts declare: building a dtype
// from a number is much cheaper than parsing its name on every output.
int NumpyTypeNum(DLDataType dtype) {
  const int bits = dtype.bits;
  switch (dtype.code) {
    case kDLBool: return 0;
    case kDLInt: return bits == 8 ? 1 : bits == 16 ? 3 : bits == 32 ? 5 : bits == 64 ? 7 : -1;
    case kDLUInt: return bits == 8 ? 2 : bits == 16 ? 4 : bits == 32 ? 6 : bits == 64 ? 8 : -1;
    case kDLFloat: return bits == 16 ? 23 : bits == 32 ? 11 : bits == 64 ? 12 : -1;
    default: return -1;
  }
}

// A numpy array viewing a pooled output; its capsule holds the block until the array dies.
py::array OutputToNumpy(const OutputTensor& tensor, const py::dtype& dtype) {
  auto holder = std::make_unique<std::shared_ptr<const memory::Block>>(tensor.block);
  py::capsule keep_alive(holder.get(), [](void* p) {
    delete static_cast<std::shared_ptr<const memory::Block>*>(p);
  });
  holder.release();  // owned by the capsule now
  const std::vector<py::ssize_t> shape(tensor.shape.begin(), tensor.shape.end());
  return py::array(dtype, shape, tensor.data(), keep_alive);
}

// Turns an engine's outputs into dicts of numpy arrays, with the output names (interned) and
// dtypes made once instead of per request. Holds Python objects: create, use and destroy it
// with the GIL. Immutable after construction, so threads that interleave under the GIL may
// share one.
class OutputConverter {
 public:
  explicit OutputConverter(std::shared_ptr<const OutputInfo> info) : info_(std::move(info)) {
    for (size_t i = 0; i < info_->names.size(); ++i) {
      const std::string& text = info_->names[i];
      PyObject* name = PyUnicode_FromStringAndSize(text.data(), static_cast<py::ssize_t>(text.size()));
      if (name == nullptr) throw py::error_already_set();
      PyUnicode_InternInPlace(&name);
      names_.push_back(py::reinterpret_steal<py::str>(name));
      const int typenum = NumpyTypeNum(info_->dtypes[i]);
      dtypes_.push_back(typenum >= 0 ? py::dtype(typenum) : NumpyDType(info_->dtypes[i]));
    }
  }

  // Whether this converter is the one for outputs described by `info`.
  bool Serves(const std::shared_ptr<const OutputInfo>& info) const { return info == info_; }

  // Consumes `outputs`: afterwards only the arrays hold the pooled blocks, so they go back to the
  // pool exactly when the caller drops the arrays.
  py::dict ToDict(std::vector<OutputTensor> outputs) const {
    py::dict out;
    for (size_t i = 0; i < outputs.size(); ++i) {
      out[names_[i]] = OutputToNumpy(outputs[i], dtypes_[i]);
    }
    return out;
  }

 private:
  std::shared_ptr<const OutputInfo> info_;  // pinned: no other info can take its address
  std::vector<py::str> names_;
  std::vector<py::dtype> dtypes_;
};

// Interned method names, created once and never freed (they may be needed until exit).
PyObject* InternedName(const char* name) {
  PyObject* interned = PyUnicode_InternFromString(name);
  if (interned == nullptr) throw py::error_already_set();
  return interned;
}

// future.<method>(arg) (no arg when null) through the C API with an interned name: per-request
// paths pay neither pybind11's attribute lookup by a fresh string nor its argument packing.
py::object CallMethod(const py::handle& target, PyObject* method, PyObject* arg = nullptr) {
  PyObject* result = arg == nullptr ? PyObject_CallMethodNoArgs(target.ptr(), method)
                                    : PyObject_CallMethodOneArg(target.ptr(), method, arg);
  if (result == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(result);
}

// One finished request on its way to a Python future.
struct Finished {
  PyObject* future;  // a strong reference taken at submit (with the GIL), released at dispatch
  Status status;
  std::vector<OutputTensor> outputs;
  std::shared_ptr<const OutputInfo> info;
};

// Finished requests waiting for a Python thread to resolve their futures. For asyncio it also
// signals an eventfd that the event loop watches (loop.add_reader), so no thread per request and
// no GIL on the lanes; its futures only wake their tasks (set to None), which then take the
// outputs from their AsyncResult. Thread-safety: Push() from any thread without the GIL;
// Dispatch() and the destructor with the GIL.
class CompletionQueue {
 public:
  explicit CompletionQueue(bool for_asyncio) : asyncio_(for_asyncio) {
    if (asyncio_) {
      fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (fd_ < 0) ThrowIfError(Status::RuntimeError(std::string("eventfd failed: ") + std::strerror(errno)));
    }
  }
  ~CompletionQueue() {
    for (Finished& item : items_) Py_DECREF(item.future);  // the GIL is held: pybind11 dealloc
    if (fd_ >= 0) close(fd_);
  }
  CompletionQueue(const CompletionQueue&) = delete;
  CompletionQueue& operator=(const CompletionQueue&) = delete;

  bool for_asyncio() const { return asyncio_; }

  void Push(Finished item) {
    bool was_empty;
    {
      const auto lock = SpinLocked(mutex_);  // a lane: never sleep on the dispatcher's brief hold
      was_empty = items_.empty();
      items_.push_back(std::move(item));
    }
    if (!was_empty) return;  // whoever dispatches has been woken already
    ready_.notify_one();
    if (fd_ >= 0) {
      const uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = write(fd_, &one, sizeof(one));
    }
  }

  // Resolves the futures of every finished request. timeout_s < 0 waits until there is one or
  // the queue is closed, > 0 waits at most that long, 0 does not wait. Returns how many futures
  // it resolved, or -1 once the queue is closed and empty.
  int Dispatch(double timeout_s) {
    std::vector<Finished> ready;
    bool finished = false;
    {
      std::unique_ptr<py::gil_scoped_release> release;
      if (timeout_s != 0) release = std::make_unique<py::gil_scoped_release>();
      if (fd_ >= 0) {
        // Re-arm the fd before taking the items, outside the lock (a syscall: lanes must not
        // wait on it). A push after the read is taken below or writes the fd again itself.
        uint64_t count;
        [[maybe_unused]] const ssize_t n = read(fd_, &count, sizeof(count));
      }
      auto lock = SpinLocked(mutex_);
      auto has_work = [&] { return !items_.empty() || closed_; };
      if (timeout_s < 0) {
        ready_.wait(lock, has_work);
      } else if (timeout_s > 0) {
        ready_.wait_for(lock, std::chrono::duration<double>(timeout_s), has_work);
      }
      ready.swap(items_);
      finished = ready.empty() && closed_;
    }
    if (finished) return -1;
    for (Finished& item : ready) Resolve(item);
    return static_cast<int>(ready.size());
  }

  void Close() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      closed_ = true;
    }
    ready_.notify_all();
    if (fd_ >= 0) {
      const uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = write(fd_, &one, sizeof(one));
    }
  }

  int fd() const { return fd_; }

 private:
  void Resolve(Finished& item) {
    static PyObject* const done = InternedName("done");
    static PyObject* const set_running = InternedName("set_running_or_notify_cancel");
    static PyObject* const set_result = InternedName("set_result");
    static PyObject* const set_exception = InternedName("set_exception");
    py::object future = py::reinterpret_steal<py::object>(item.future);
    try {
      if (asyncio_) {
        // Only wakes the task (unless its awaiter cancelled it): the outputs wait in its
        // AsyncResult.
        if (CallMethod(future, done).ptr() != Py_True) CallMethod(future, set_result, Py_None);
        return;
      }
      if (CallMethod(future, set_running).ptr() != Py_True) return;  // cancelled before it ran
      if (item.status.ok()) {
        if (!converter_ || !converter_->Serves(item.info)) {
          converter_ = std::make_unique<OutputConverter>(item.info);
        }
        const py::dict result = converter_->ToDict(std::move(item.outputs));
        CallMethod(future, set_result, result.ptr());
      } else {
        CallMethod(future, set_exception, MakeException(item.status).ptr());
      }
    } catch (py::error_already_set& err) {
      err.discard_as_unraisable("resolving an ember.Engine future");
    }
  }

  const bool asyncio_;
  // Made on first use, by the one thread that dispatches this queue; destroyed with the GIL,
  // like the queue itself.
  std::unique_ptr<OutputConverter> converter_;
  int fd_ = -1;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::vector<Finished> items_;
  bool closed_ = false;
};

// One asyncio request's outcome (a ResultSlot). The lane leaves it here; the awaiting task,
// which gives the loop one round after submitting (so that the loop's other tasks submit
// meanwhile and a fast batch finishes), takes it without any future. Only a task that finds it
// still running attaches a future and its loop's CompletionQueue, to which the lane then hands
// the future to wake the task: a future, its callbacks and the fd are paid only by requests that
// outlast a loop round. Thread-safety: the lane completes the slot without the GIL; the rest runs
// with the GIL. The last reference may drop on a lane (the task gave up): the destructor then
// touches no Python object (an attached future is always handed on by the slot's wake-up), and
// the engine holds the converter and the queues until its lanes have stopped (see ~PyEngine).
class AsyncResult {
 public:
  AsyncResult(std::shared_ptr<const OutputConverter> converter, std::shared_ptr<std::atomic<int>> untaken)
      : converter_(std::move(converter)), untaken_(std::move(untaken)) {
    untaken_->fetch_add(1, std::memory_order_acq_rel);
  }
  ~AsyncResult() {
    if (!taken_) untaken_->fetch_sub(1, std::memory_order_acq_rel);
  }
  AsyncResult(const AsyncResult&) = delete;
  AsyncResult& operator=(const AsyncResult&) = delete;

  engine::ResultSlot& slot() { return slot_; }
  bool done() const { return slot_.done(); }

  // Has `queue` resolve `future` when the request finishes; false (nothing kept) if it already
  // has. The caller keeps `queue` alive until the lanes stop.
  bool Attach(const py::object& future, CompletionQueue* queue) {
    if (attached_) ThrowIfError(Status::Internal("AsyncResult: a future is already attached"));
    PyObject* raw = future.inc_ref().ptr();  // handed to the queue by the wake-up
    if (!slot_.WakeWhenDone([raw, queue] { queue->Push(Finished{raw, Status::Ok(), {}, nullptr}); })) {
      future.dec_ref();
      return false;
    }
    attached_ = true;
    return true;
  }

  // The outputs, or the request's error raised; once, after done.
  py::dict Take() {
    if (!done()) ThrowIfError(Status::Internal("AsyncResult.take: the request has not finished yet"));
    if (taken_) ThrowIfError(Status::Internal("AsyncResult.take: the outputs were already taken"));
    taken_ = true;
    untaken_->fetch_sub(1, std::memory_order_acq_rel);
    std::vector<OutputTensor> outputs = slot_.TakeOutputs();
    ThrowIfError(slot_.status());
    return converter_->ToDict(std::move(outputs));
  }

 private:
  const std::shared_ptr<const OutputConverter> converter_;
  const std::shared_ptr<std::atomic<int>> untaken_;  // the engine's count of these not taken
  engine::ResultSlot slot_;
  bool attached_ = false;  // with the GIL
  bool taken_ = false;     // with the GIL
};

// The result of a blocking run(), handed over by the completing lane; its thread is woken
// through the engine's HandoffGate.
struct Waiter : engine::HandoffGate::Ticket {
  Status status;
  std::vector<OutputTensor> outputs;
};

// Counts a caller in for its scope.
class CallerCount {
 public:
  explicit CallerCount(std::atomic<int>* count) : count_(count) { count_->fetch_add(1); }
  ~CallerCount() { count_->fetch_sub(1); }
  CallerCount(const CallerCount&) = delete;
  CallerCount& operator=(const CallerCount&) = delete;

 private:
  std::atomic<int>* count_;
};

class PyEngine {
 public:
  PyEngine(std::shared_ptr<runtime::Model> model, engine::EngineOptions options) {
    auto info = std::make_shared<OutputInfo>();
    for (const TensorSpec& spec : model->manifest().outputs) {
      info->names.push_back(spec.name);
      info->dtypes.push_back(spec.dtype);
    }
    info_ = std::move(info);
    converter_ = std::make_shared<const OutputConverter>(info_);
    Result<std::unique_ptr<Engine>> created = [&] {
      py::gil_scoped_release release;  // creating VMs takes a while
      return Engine::Create(std::move(model), std::move(options));
    }();
    engine_ = ValueOrThrow(std::move(created));
  }

  // The GIL is held here (pybind11 dealloc): closing waits for the lanes without it, so their
  // last completions reach the queues, which are released only afterwards, with the GIL.
  ~PyEngine() {
    {
      py::gil_scoped_release release;
      engine_.reset();
      gate_.reset();  // after the lanes: no completion reaches it any more
    }
    queues_.clear();
  }
  PyEngine(const PyEngine&) = delete;
  PyEngine& operator=(const PyEngine&) = delete;

  py::dict Run(const py::dict& inputs, int priority, int64_t timeout_us) {
    const CallerCount counted(&callers_in_run_);
    auto waiter = std::make_shared<Waiter>();
    try {
      SubmitWith(inputs, priority, timeout_us,
                 [waiter, gate = gate_](Status status, std::vector<OutputTensor> outputs) {
                   waiter->status = std::move(status);
                   waiter->outputs = std::move(outputs);
                   gate->Complete(waiter);  // publishes the fields above to the woken thread
                 });
    } catch (...) {
      gate_->Release();  // refused: this thread will not block, so let the next caller go
      throw;
    }
    {
      // GIL given up first, then the baton: the caller woken next finds the GIL free.
      py::gil_scoped_release release;
      gate_->Release();
      // Polling pays only for a lone caller: with others blocked, it would take the core that
      // the baton's next holder and the lanes need (measured: 64 threads 78k -> 12k req/s).
      if (callers_in_run_.load(std::memory_order_relaxed) == 1) {
        SpinWhileFast([&] { return waiter->woken(); });
      }
      gate_->Wait(*waiter);
    }
    ThrowIfError(waiter->status);
    // Moved out: the lane's completion still holds `waiter` for a moment after waking us.
    return converter_->ToDict(std::move(waiter->outputs));
  }

  void Submit(const py::dict& inputs, const py::object& future,
              const std::shared_ptr<CompletionQueue>& queue, int priority, int64_t timeout_us) {
    queues_.insert(queue);  // outlives every completion that may push to it (see ~PyEngine)
    PyObject* raw = future.ptr();
    Py_INCREF(raw);
    CompletionQueue* target = queue.get();
    try {
      SubmitWith(inputs, priority, timeout_us,
                 [target, raw, info = info_](Status status, std::vector<OutputTensor> outputs) {
                   target->Push(Finished{raw, std::move(status), std::move(outputs), info});
                 });
    } catch (...) {
      Py_DECREF(raw);  // refused: the completion will never run
      throw;
    }
  }

  std::shared_ptr<AsyncResult> SubmitAsync(const py::dict& inputs, int priority, int64_t timeout_us) {
    auto result = std::make_shared<AsyncResult>(converter_, untaken_);
    SubmitWith(inputs, priority, timeout_us, [result](Status status, std::vector<OutputTensor> outputs) {
      result->slot().Complete(std::move(status), std::move(outputs));
    });
    // A lone asyncio caller of a fast model (no other asyncio request in flight): wait here a
    // moment, GIL released, so that the task takes its outputs at once instead of its loop
    // sleeping in epoll and paying a thread wake-up. With several callers this would hold back
    // the others' submissions, so it never happens then.
    if (untaken_->load(std::memory_order_acquire) == 1) {
      py::gil_scoped_release release;
      SpinWhileFast([&] { return result->done(); });
    }
    return result;
  }

  bool Attach(AsyncResult& result, const py::object& future, const std::shared_ptr<CompletionQueue>& queue) {
    if (!queue->for_asyncio()) ThrowIfError(Status::InvalidArgument("attach needs an asyncio queue"));
    queues_.insert(queue);  // outlives every completion that may push to it (see ~PyEngine)
    return result.Attach(future, queue.get());
  }

  void Close(bool drain) {
    py::gil_scoped_release release;
    engine_->Close(drain);
  }

  Engine& engine() { return *engine_; }
  engine::HandoffGate::Stats wakeup_stats() const { return gate_->stats(); }

  // How long a caller may poll for its result instead of sleeping: when batches take about as
  // long as a thread takes to wake (small models), the spin budget plus a batch; else 0.
  std::chrono::microseconds PollBudget() const {
    const int64_t budget_us = engine_->options().idle_spin_us;
    const int64_t compute_us = engine_->recent_compute_us();
    if (budget_us == 0 || compute_us > budget_us) return std::chrono::microseconds(0);
    return std::chrono::microseconds(budget_us + compute_us);
  }

 private:
  // One waiting caller at a time polls (within PollBudget) before sleeping; more would steal
  // cores from the lanes.
  template <typename Done>
  void SpinWhileFast(const Done& done) {
    const std::chrono::microseconds budget = PollBudget();
    if (budget.count() == 0) return;
    if (spinners_.fetch_add(1, std::memory_order_acq_rel) == 0) {
      const auto until = std::chrono::steady_clock::now() + budget;
      while (!done() && std::chrono::steady_clock::now() < until) {
        for (int i = 0; i < 16; ++i) CpuRelax();
      }
    }
    spinners_.fetch_sub(1, std::memory_order_acq_rel);
  }

  void SubmitWith(const py::dict& inputs, int priority, int64_t timeout_us, engine::Completion done) {
    std::vector<py::array> keep;
    const runtime::NamedTensorViews views = ConvertInputs(inputs, &keep);
    const engine::SubmitOptions options{priority, timeout_us};
    size_t bytes = 0;
    for (const auto& named : views) bytes += named.second.nbytes();
    Status status;
    if (bytes >= kReleaseGilBytes) {  // copying large inputs into the pool: let others run
      py::gil_scoped_release release;
      status = engine_->Submit(views, options, std::move(done));
    } else {
      status = engine_->Submit(views, options, std::move(done));
    }
    ThrowIfError(status);
  }

  static constexpr size_t kReleaseGilBytes = 256 * 1024;
  std::shared_ptr<const OutputInfo> info_;
  // For run() and AsyncResult::Take(); made, used and released with the GIL.
  std::shared_ptr<const OutputConverter> converter_;
  std::shared_ptr<std::atomic<int>> untaken_ = std::make_shared<std::atomic<int>>(0);
  std::unique_ptr<Engine> engine_;
  // Wakes blocked run() callers one at a time (see handoff.h); shared with their completions.
  std::shared_ptr<engine::HandoffGate> gate_ = std::make_shared<engine::HandoffGate>();
  std::set<std::shared_ptr<CompletionQueue>> queues_;
  std::atomic<int> spinners_{0};
  std::atomic<int> callers_in_run_{0};

 public:
  uint64_t resolved_in_submit = 0;  // infer() calls done during submit; with the GIL
};

// A lone asyncio caller of a fast model gets its outputs during submit (the core polls for them
// briefly), so its call completes without a loop round; one such call in this many still yields,
// so that a task calling in a loop cannot starve the loop's other tasks for more than a few ms.
constexpr uint64_t kYieldEveryInline = 16;

// `engine.infer(...)`: a native coroutine object, so that a request runs Engine.infer's steps
// without a Python frame of its own. A C type rather than a pybind11 class: its am_send slot
// returns the outputs without raising StopIteration, where a pybind11 method would throw and
// catch a C++ exception per request (measured: half the throughput of the Python coroutine).
// Like a coroutine it does nothing until first sent to (awaited, or scheduled as a task). Then:
// submit; if the outputs are already there (a lone caller, polled during submit) return them;
// else give the loop a round (a bare yield: no future) and look again, for a fast model until its
// poll budget (PyEngine::PollBudget) runs out; else attach a future of the running loop, yield
// it, and return the outputs once the lane's completion resolves it.
// Not thread-safe, like a coroutine: it runs on its loop's thread, with the GIL.
class InferCall {
 public:
  InferCall(py::object engine, py::dict inputs, int priority, int64_t timeout_us, py::object queue_for_loop)
      : engine_(std::move(engine)), inputs_(std::move(inputs)), priority_(priority),
        timeout_us_(timeout_us), queue_for_loop_(std::move(queue_for_loop)) {}

  // One step of the coroutine: PYGEN_NEXT with *out to yield, PYGEN_RETURN with *out the
  // outputs, or PYGEN_ERROR with the Python error set. Never throws.
  PySendResult Step(PyObject* value, PyObject** out) noexcept {
    *out = nullptr;
    try {
      py::object yielded = StepOrThrow(value);
      if (!yielded) {  // finished: the outputs, or the request's error raised by Take()
        py::dict outputs = result_->Take();
        result_.reset();
        *out = outputs.release().ptr();
        return PYGEN_RETURN;
      }
      *out = yielded.release().ptr();
      return PYGEN_NEXT;
    } catch (py::error_already_set& err) {
      state_ = State::kFinished;
      result_.reset();
      err.restore();
    } catch (const std::exception& err) {
      state_ = State::kFinished;
      result_.reset();
      PyErr_SetString(PyExc_RuntimeError, err.what());
    }
    return PYGEN_ERROR;
  }

  // Ends the call early: close(), or an error thrown in (a cancelled task), which the caller
  // then raises. The request still runs; its outputs go with this object.
  void Finish() {
    state_ = State::kFinished;
    result_.reset();
  }

 private:
  enum class State { kNew, kYielded, kRound, kWaiting, kFinished };

  // What to yield next, or a null object once the outputs can be taken.
  py::object StepOrThrow(PyObject* value) {
    if (state_ == State::kFinished) ThrowIfError(Status::Internal("cannot reuse an already awaited infer() call"));
    if (state_ == State::kNew) {
      if (value != Py_None) ThrowIfError(Status::Internal("can't send a value to a just-started infer() call"));
      state_ = State::kFinished;  // until submitted: a refused submit raises and ends the call
      PyEngine& engine = engine_.cast<PyEngine&>();
      result_ = engine.SubmitAsync(inputs_, priority_, timeout_us_);
      inputs_ = py::dict();  // copied into the pool: let the caller's arrays go
      poll_until_ = std::chrono::steady_clock::now() + engine.PollBudget();
      if (result_->done() && ++engine.resolved_in_submit % kYieldEveryInline != 0) return py::object();
      state_ = result_->done() ? State::kYielded : State::kRound;  // kYielded: let others run
      return py::none();
    }
    if (state_ == State::kRound && !result_->done()) {
      // A fast model's batch is due within the poll budget: another loop round costs less
      // than a future, its callbacks and the loop's sleep in epoll and wake-up.
      if (std::chrono::steady_clock::now() < poll_until_) return py::none();
      static PyObject* const get_running_loop = ImportAttr("asyncio", "get_running_loop");
      static PyObject* const create_future = InternedName("create_future");
      static PyObject* const blocking = InternedName("_asyncio_future_blocking");
      py::object loop = py::reinterpret_steal<py::object>(PyObject_CallNoArgs(get_running_loop));
      if (!loop) throw py::error_already_set();
      py::object future = CallMethod(loop, create_future);
      auto queue = queue_for_loop_(loop).cast<std::shared_ptr<CompletionQueue>>();
      if (engine_.cast<PyEngine&>().Attach(*result_, future, queue)) {
        if (PyObject_SetAttr(future.ptr(), blocking, Py_True) != 0) throw py::error_already_set();
        state_ = State::kWaiting;
        return future;  // the task waits on it
      }
    }
    state_ = State::kFinished;
    return py::object();
  }

  static PyObject* ImportAttr(const char* module, const char* name) {
    py::object attr = py::module_::import(module).attr(name);
    return attr.release().ptr();  // kept until exit
  }

  py::object engine_;  // the _core.Engine, kept alive while the call is
  py::dict inputs_;
  const int priority_;
  const int64_t timeout_us_;
  py::object queue_for_loop_;  // Engine._loop_queue: the loop's CompletionQueue, watched by it
  std::shared_ptr<AsyncResult> result_;
  std::chrono::steady_clock::time_point poll_until_;  // loop rounds until then, then a future
  State state_ = State::kNew;
};

// The Python object around an InferCall (constructed in place; destroyed with the GIL).
struct InferCallObject {
  PyObject_HEAD
  alignas(InferCall) unsigned char storage[sizeof(InferCall)];
};

InferCall& CallOf(PyObject* self) {
  return *std::launder(reinterpret_cast<InferCall*>(reinterpret_cast<InferCallObject*>(self)->storage));
}

PyTypeObject* infer_call_type = nullptr;  // made once by BindEngine, kept until exit

// A step's outcome as iterator protocol: the yielded value, or NULL with StopIteration(value)
// or the error set.
PyObject* AsIteratorResult(PySendResult status, PyObject* out) {
  if (status == PYGEN_NEXT) return out;
  if (status == PYGEN_RETURN) {
    PyErr_SetObject(PyExc_StopIteration, out);  // a dict: not unpacked as arguments
    Py_DECREF(out);
  }
  return nullptr;
}

PySendResult InferCallSend(PyObject* self, PyObject* value, PyObject** out) {
  return CallOf(self).Step(value, out);
}

PyObject* InferCallSendMethod(PyObject* self, PyObject* value) {
  PyObject* out = nullptr;
  const PySendResult status = CallOf(self).Step(value, &out);  // before `out` is read
  return AsIteratorResult(status, out);
}

PyObject* InferCallNext(PyObject* self) { return InferCallSendMethod(self, Py_None); }

PyObject* InferCallThrow(PyObject* self, PyObject* args) {
  PyObject *type, *value = nullptr, *traceback = nullptr;
  if (!PyArg_UnpackTuple(args, "throw", 1, 3, &type, &value, &traceback)) return nullptr;
  CallOf(self).Finish();
  if (PyExceptionInstance_Check(type)) {
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(type)), type);
  } else if (PyExceptionClass_Check(type)) {
    PyErr_SetObject(type, value != nullptr ? value : Py_None);
  } else {
    PyErr_SetString(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException");
    return nullptr;
  }
  if (traceback != nullptr && traceback != Py_None) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    Py_XDECREF(tb);
    Py_INCREF(traceback);
    PyErr_Restore(t, v, traceback);
  }
  return nullptr;
}

PyObject* InferCallClose(PyObject* self, PyObject*) {
  CallOf(self).Finish();
  Py_RETURN_NONE;
}

PyObject* InferCallAwait(PyObject* self) {
  Py_INCREF(self);
  return self;
}

void InferCallDealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  CallOf(self).~InferCall();
  type->tp_free(self);
  Py_DECREF(type);
}

PyMethodDef infer_call_methods[] = {
    {"send", InferCallSendMethod, METH_O, "Resume with a value (None); see the class doc."},
    {"throw", InferCallThrow, METH_VARARGS, "Raise an exception at the current step."},
    {"close", InferCallClose, METH_NOARGS, "Stop; the request still runs, its outputs are dropped."},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot infer_call_slots[] = {
    {Py_tp_doc, const_cast<char*>("One engine.infer(...) call: a native coroutine.")},
    {Py_tp_dealloc, reinterpret_cast<void*>(InferCallDealloc)},
    {Py_tp_iter, reinterpret_cast<void*>(PyObject_SelfIter)},
    {Py_tp_iternext, reinterpret_cast<void*>(InferCallNext)},
    {Py_tp_methods, infer_call_methods},
    {Py_am_await, reinterpret_cast<void*>(InferCallAwait)},
    {Py_am_send, reinterpret_cast<void*>(InferCallSend)},
    {0, nullptr},
};

PyType_Spec infer_call_spec = {
    "ember._core.InferCall", sizeof(InferCallObject), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_DISALLOW_INSTANTIATION, infer_call_slots,
};

py::object NewInferCall(py::object engine, py::dict inputs, int priority, int64_t timeout_us,
                        py::object queue_for_loop) {
  PyObject* self = infer_call_type->tp_alloc(infer_call_type, 0);
  if (self == nullptr) throw py::error_already_set();
  new (reinterpret_cast<InferCallObject*>(self)->storage)
      InferCall(std::move(engine), std::move(inputs), priority, timeout_us, std::move(queue_for_loop));
  return py::reinterpret_steal<py::object>(self);
}

py::dict HistogramToDict(const engine::HistogramSnapshot& h) {
  py::list buckets;  // (upper edge, count) of every non-empty bucket, for exporters
  for (size_t i = 0; i < h.buckets.size(); ++i) {
    if (h.buckets[i] != 0) buckets.append(py::make_tuple(engine::Histogram::UpperEdge(i), h.buckets[i]));
  }
  return py::dict(py::arg("count") = h.count, py::arg("sum") = h.sum, py::arg("max") = h.max,
                  py::arg("mean") = h.Mean(), py::arg("p50") = h.Percentile(50),
                  py::arg("p90") = h.Percentile(90), py::arg("p99") = h.Percentile(99),
                  py::arg("p999") = h.Percentile(99.9), py::arg("buckets") = buckets);
}

py::dict MetricsToDict(const engine::MetricsSnapshot& m) {
  py::dict failures;
  for (size_t code = 0; code < kNumStatusCodes; ++code) {
    if (m.failures_by_code[code] != 0) {
      failures[py::str(StatusCodeName(static_cast<StatusCode>(code)))] = m.failures_by_code[code];
    }
  }
  return py::dict(py::arg("requests") = m.requests, py::arg("rows") = m.rows,
                  py::arg("successes") = m.successes, py::arg("rejections") = m.rejections,
                  py::arg("failures") = failures, py::arg("queue_us") = HistogramToDict(m.queue_us),
                  py::arg("compute_us") = HistogramToDict(m.compute_us),
                  py::arg("total_us") = HistogramToDict(m.total_us),
                  py::arg("batch_rows") = HistogramToDict(m.batch_rows));
}

}  // namespace

void BindEngine(py::module_& m) {
  py::class_<CompletionQueue, std::shared_ptr<CompletionQueue>>(
      m, "CompletionQueue", "Finished engine requests waiting to resolve their Python futures.")
      .def(py::init<bool>(), py::arg("for_asyncio"))
      .def("dispatch", [](CompletionQueue& queue, double timeout_s) { return queue.Dispatch(timeout_s); },
           py::arg("timeout_s") = -1.0,
           "Resolve finished futures; waits per timeout_s (GIL released); -1 once closed.")
      .def("close", &CompletionQueue::Close)
      .def_property_readonly("fd", &CompletionQueue::fd);

  py::class_<AsyncResult, std::shared_ptr<AsyncResult>>(
      m, "AsyncResult", "One asyncio request's outcome, taken by its task once done.")
      .def_property_readonly("done", &AsyncResult::done)
      .def("take", &AsyncResult::Take, "The outputs, or the request's error raised; once.");

  m.attr("YIELD_EVERY_INLINE") = kYieldEveryInline;  // for ember.engine and its tests
  infer_call_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&infer_call_spec));
  if (infer_call_type == nullptr) throw py::error_already_set();
  m.add_object("InferCall", py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(infer_call_type)));

  py::class_<PyEngine>(m, "Engine", "Dynamic batching over lanes of a loaded model (C++ core).")
      .def(py::init([](const std::shared_ptr<runtime::Model>& model, int lanes, int threads_per_lane,
                       int64_t max_batch_size, int64_t max_queue_delay_us,
                       std::vector<int64_t> preferred_batch_sizes, int64_t max_queue_size,
                       int64_t default_timeout_us) {
             engine::EngineOptions options;
             options.lanes = lanes;
             options.threads_per_lane = threads_per_lane;
             options.max_batch_size = max_batch_size;
             options.max_queue_delay_us = max_queue_delay_us;
             options.preferred_batch_sizes = std::move(preferred_batch_sizes);
             options.max_queue_size = max_queue_size;
             options.default_timeout_us = default_timeout_us;
             return std::make_unique<PyEngine>(model, std::move(options));
           }),
           py::arg("model"), py::arg("lanes"), py::arg("threads_per_lane"), py::arg("max_batch_size"),
           py::arg("max_queue_delay_us"), py::arg("preferred_batch_sizes"), py::arg("max_queue_size"),
           py::arg("default_timeout_us"))
      .def("run", &PyEngine::Run, py::arg("inputs"), py::arg("priority"), py::arg("timeout_us"))
      .def("submit", &PyEngine::Submit, py::arg("inputs"), py::arg("future"), py::arg("queue"),
           py::arg("priority"), py::arg("timeout_us"))
      .def("submit_async", &PyEngine::SubmitAsync, py::arg("inputs"), py::arg("priority"),
           py::arg("timeout_us"))
      .def("infer",
           [](py::object self, py::dict inputs, int priority, int64_t timeout_us, py::object queue_for_loop) {
             return NewInferCall(std::move(self), std::move(inputs), priority, timeout_us,
                                 std::move(queue_for_loop));
           },
           py::arg("inputs"), py::arg("priority"), py::arg("timeout_us"), py::arg("queue_for_loop"))
      .def("close", &PyEngine::Close, py::arg("drain"))
      .def_property_readonly("closed", [](PyEngine& self) { return self.engine().closed(); })
      .def_property_readonly("queue_size", [](PyEngine& self) { return self.engine().queue_size(); })
      .def("metrics", [](PyEngine& self) {
        py::dict out = MetricsToDict(self.engine().metrics());
        const engine::HandoffGate::Stats w = self.wakeup_stats();
        out["wakeups"] = py::dict(py::arg("at_once") = w.woken_at_once,
                                  py::arg("handed_off") = w.handed_off,
                                  py::arg("by_watchdog") = w.woken_by_watchdog);
        return out;
      })
      .def("memory_stats", [](PyEngine& self) {
        const memory::PoolStats s = self.engine().pool_stats();
        return py::dict(py::arg("bytes_in_use") = s.bytes_in_use,
                        py::arg("peak_bytes_in_use") = s.peak_bytes_in_use,
                        py::arg("bytes_cached") = s.bytes_cached, py::arg("hits") = s.hits,
                        py::arg("misses") = s.misses, py::arg("allocations") = s.allocations,
                        py::arg("failures") = s.failures);
      })
      .def_property_readonly("options", [](PyEngine& self) {
        const engine::EngineOptions& o = self.engine().options();
        return py::dict(py::arg("lanes") = o.lanes, py::arg("threads_per_lane") = o.threads_per_lane,
                        py::arg("max_batch_size") = o.max_batch_size,
                        py::arg("max_queue_delay_us") = o.max_queue_delay_us,
                        py::arg("preferred_batch_sizes") = o.preferred_batch_sizes,
                        py::arg("max_queue_size") = o.max_queue_size,
                        py::arg("default_timeout_us") = o.default_timeout_us);
      });
}

}  // namespace ember::bindings
