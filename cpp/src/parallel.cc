#include "ember/parallel.h"

#include <dlfcn.h>
#include <omp.h>

#include <atomic>
#include <cstdint>

namespace ember::runtime {
namespace {

// The ABI of TVM's generated code (tvm/runtime/c_backend_api.h), restated here because TVM's
// runtime headers are not shipped completely (tvm-notes.md).
struct TVMParallelGroupEnv {
  void* sync_handle;
  int32_t num_task;
};
using FTVMParallelLambda = int (*)(int task_id, TVMParallelGroupEnv* penv, void* cdata);
using FTVMParallelLaunch = int (*)(FTVMParallelLambda, void*, int);

// Runs tasks [0, num_task) of a TVM parallel loop on the OpenMP pool. Each task is a static slice
// of the loop; tasks never wait on each other (the generated code here uses no barriers), so a
// pool with fewer threads than tasks still completes every task.
int OpenMpParallelLaunch(FTVMParallelLambda lambda, void* cdata, int num_task) {
  const int tasks = num_task > 0 ? num_task : omp_get_max_threads();
  TVMParallelGroupEnv env{nullptr, tasks};
  if (tasks == 1 || omp_in_parallel()) {
    int status = 0;
    for (int t = 0; t < tasks && status == 0; ++t) status = lambda(t, &env, cdata);
    return status;
  }
  std::atomic<int> status{0};
#pragma omp parallel for schedule(static) num_threads(tasks)
  for (int t = 0; t < tasks; ++t) {
    const int rc = lambda(t, &env, cdata);
    if (rc != 0) status.store(rc, std::memory_order_relaxed);
  }
  return status.load();
}

}  // namespace

Result<bool> UseSharedThreadPool(const std::string& so_path) {
  // RTLD_NOLOAD: only look up the library TVM already loaded; never load code here.
  void* handle = dlopen(so_path.c_str(), RTLD_LAZY | RTLD_NOLOAD);
  if (handle == nullptr) {
    return Status::Internal("'" + so_path + "' is not loaded: " + std::string(dlerror()));
  }
  auto* slot = static_cast<FTVMParallelLaunch*>(dlsym(handle, "__TVMBackendParallelLaunch"));
  if (slot != nullptr) *slot = &OpenMpParallelLaunch;
  dlclose(handle);  // drops only the reference taken above; TVM keeps the library loaded
  return slot != nullptr;
}

}  // namespace ember::runtime
