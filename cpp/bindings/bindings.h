// One Bind* function per subsystem; module.cc calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace ember::bindings {

void BindErrors(pybind11::module_& m);
void BindModel(pybind11::module_& m);
void BindHost(pybind11::module_& m);

}  // namespace ember::bindings
