// One Bind* function per subsystem; module.cc calls them all. Plus the numpy conversions that
// more than one subsystem uses.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <vector>

#include "ember/executor.h"

namespace ember::bindings {

void BindErrors(pybind11::module_& m);
void BindModel(pybind11::module_& m);
void BindEngine(pybind11::module_& m);
void BindHost(pybind11::module_& m);

// Views of a dict of numpy arrays (name -> array). Needs the GIL. Arrays that are not
// C-contiguous are copied; `keep` holds every array the views point into. Raises
// InvalidInputError for non-string names, non-arrays and unsupported dtypes.
runtime::NamedTensorViews ConvertInputs(const pybind11::dict& inputs,
                                        std::vector<pybind11::array>* keep);

pybind11::dtype NumpyDType(DLDataType dtype);

}  // namespace ember::bindings
