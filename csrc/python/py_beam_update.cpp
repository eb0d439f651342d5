#include <pybind11/stl.h>

#include <memory>
#include <mutex>

#include "beamner/beam_update.hpp"
#include "common.hpp"

namespace beamner::python {

namespace {

using PyBeamUpdate = Guarded<BeamUpdate>;

py::array_t<std::int32_t> prepare_step(BeamUpdate& update) {
  const auto n = static_cast<py::ssize_t>(update.prepare_step());
  py::array_t<std::int32_t> ids({n, static_cast<py::ssize_t>(kNumContextFeatures)});
  update.context_tokens(ids.mutable_data());
  return ids;
}

py::array_t<float> gradient(BeamUpdate& update, int step) {
  const auto rows = static_cast<py::ssize_t>(update.n_rows(step));
  py::array_t<float> out({rows, static_cast<py::ssize_t>(update.n_actions())});
  update.gradient(step, out.mutable_data());
  return out;
}

}  // namespace

void bind_beam_update(py::module_& m) {
  py::class_<PyBeamUpdate>(m, "BeamUpdate",
                           "A global (beam) training update: spaCy's update_beam, natively.")
      .def(py::init([](const TransitionSystem& system, const DocBatch& docs,
                       std::vector<Gold> golds, int width, float density) {
             return std::make_unique<PyBeamUpdate>(
                 BeamUpdate(system, docs, std::move(golds), width, density), "BeamUpdate");
           }),
           py::arg("system"), py::arg("docs"), py::arg("golds"), py::arg("width"),
           py::arg("density") = 0.0f)
      .def_property_readonly("is_done", [](const PyBeamUpdate& u) { return u.value.is_done(); })
      .def("prepare_step", locked(&prepare_step),
           "Collect the step's unique states; returns their (n_rows, 3) context token ids.")
      .def("advance", locked(&advance_released<BeamUpdate>), py::arg("scores"),
           "Advance both beams with the prepared rows' scores.")
      .def_property_readonly("n_gradient_steps",
                             [](const PyBeamUpdate& u) { return u.value.n_gradient_steps(); })
      .def("gradient", locked(&gradient), py::arg("step"),
           "d_loss/d_scores of a step, (n_rows, n_actions) float32.");
}

}  // namespace beamner::python
