#include "beamner/version.hpp"
#include "common.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "beamner native core: BILUO transition system and beam search";
  m.attr("__version__") = beamner::kVersion;
  // DocBatch and Gold first: TransitionSystem.trace's signature names them.
  beamner::python::bind_docs(m);
  beamner::python::bind_transition_system(m);
  beamner::python::bind_beam_batch(m);
  beamner::python::bind_beam_update(m);
}
