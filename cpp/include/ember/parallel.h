// One thread pool for the whole model: TVM-generated parallel loops run on the same OpenMP pool
// as the oneDNN kernels, instead of TVM's own spinning pool fighting OpenMP's for the cores.
#pragma once

#include <string>

#include "ember/status.h"

namespace ember::runtime {

// Points the compiled library at `so_path` (already loaded by TVM) to ember's OpenMP-backed
// parallel launcher. Returns whether the library had a parallel-launch slot to redirect (a model
// without parallel loops has none). Thread-safe; call before the library's code first runs.
Result<bool> UseSharedThreadPool(const std::string& so_path);

}  // namespace ember::runtime
