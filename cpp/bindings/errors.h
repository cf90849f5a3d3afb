// Status -> Python exception translation. Only binding code includes this.
#pragma once

#include <pybind11/pybind11.h>

#include "ember/status.h"

namespace ember::bindings {

// Raises the ember.EmberError subclass for `status` (with the full message and .code) if not ok.
void ThrowIfError(const Status& status);

// The exception ThrowIfError would raise, as an object (for futures). Needs the GIL.
pybind11::object MakeException(const Status& status);

template <typename T>
T ValueOrThrow(Result<T>&& result) {
  ThrowIfError(result.status());
  return std::move(result).value();
}

}  // namespace ember::bindings
