#include <pybind11/stl.h>

#include <optional>

#include "beamner/transition_system.hpp"
#include "common.hpp"

namespace beamner::python {

namespace {

TransitionSystem make_system(const IntArray& moves, const IntArray& labels) {
  const auto mv = int_vector<std::uint8_t>(moves, "moves");
  const auto lb = int_vector<std::uint64_t>(labels, "labels");
  if (mv.size() != lb.size()) {
    throw py::value_error("moves and labels must have the same length, got " +
                          std::to_string(mv.size()) + " and " + std::to_string(lb.size()));
  }
  std::vector<Action> actions(mv.size());
  for (std::size_t i = 0; i < mv.size(); ++i) {
    actions[i] = {static_cast<Move>(mv[i]), lb[i]};
  }
  return TransitionSystem(std::move(actions));
}

// Walks `history` from the initial state of document `doc`, recording each
// step's validity, costs (with a gold) and context tokens.
py::typing::Tuple<py::array_t<bool>, py::typing::Optional<py::array_t<float>>,
                  py::array_t<std::int32_t>>
trace(const TransitionSystem& system, const DocBatch& docs, int doc, const IntArray& history,
      const std::optional<Gold>& gold_arg) {
  const Gold* gold = gold_arg ? &*gold_arg : nullptr;
  if (doc < 0 || doc >= docs.n_docs()) {
    throw py::index_error("document index " + std::to_string(doc) + " out of range for " +
                          std::to_string(docs.n_docs()) + " documents");
  }
  const auto hist = int_vector<std::int32_t>(history, "history");
  const std::int32_t length = docs.length(doc);
  if (gold != nullptr && static_cast<std::int32_t>(gold->ner.size()) != length) {
    throw py::value_error("gold has " + std::to_string(gold->ner.size()) +
                          " tags for a document of " + std::to_string(length) + " tokens");
  }
  const auto n_steps = static_cast<py::ssize_t>(hist.size());
  const py::ssize_t n_actions = system.n_actions();
  py::array_t<bool> valid({n_steps, n_actions});
  py::array_t<float> costs({n_steps, n_actions});
  py::array_t<std::int32_t> context({n_steps, static_cast<py::ssize_t>(kNumContextFeatures)});
  std::vector<std::uint8_t> row(static_cast<std::size_t>(n_actions));
  State state = State::initial(length);
  for (py::ssize_t t = 0; t < n_steps; ++t) {
    if (state.is_final()) {
      throw py::value_error("history has " + std::to_string(n_steps) +
                            " actions but the document ends after " + std::to_string(t));
    }
    float* cost_row = costs.mutable_data(t, 0);
    if (gold != nullptr) {
      system.set_costs(state, docs.tokens(doc), *gold, row.data(), cost_row);
    } else {
      system.set_valid(state, docs.tokens(doc), row.data());
      std::fill(cost_row, cost_row + n_actions, 0.0f);
    }
    bool* valid_row = valid.mutable_data(t, 0);
    for (py::ssize_t j = 0; j < n_actions; ++j)
      valid_row[j] = row[static_cast<std::size_t>(j)] != 0;
    state.context_tokens(context.mutable_data(t, 0), docs.offset(doc));
    const std::int32_t clas = hist[static_cast<std::size_t>(t)];
    if (clas < 0 || clas >= n_actions) {
      throw py::value_error("history[" + std::to_string(t) + "] = " + std::to_string(clas) +
                            " is not an action index (0.." + std::to_string(n_actions - 1) + ")");
    }
    if (!row[static_cast<std::size_t>(clas)]) {
      throw py::value_error("history[" + std::to_string(t) + "] = " + std::to_string(clas) +
                            " is not valid at token " + std::to_string(state.pos));
    }
    system.apply(state, clas);
  }
  return py::make_tuple(valid, gold != nullptr ? py::object(costs) : py::object(py::none()),
                        context);
}

}  // namespace

void bind_transition_system(py::module_& m) {
  py::class_<TransitionSystem>(m, "TransitionSystem",
                               "BILUO action table with spaCy 3.8's validity rules and costs.")
      .def(py::init(&make_system), py::arg("moves"), py::arg("labels"),
           "Actions in class order: move ids (1..5: B, I, L, U, O) and label ids.")
      .def_static(
          "from_labels",
          [](const IntArray& labels) {
            return TransitionSystem::from_labels(int_vector<std::uint64_t>(labels, "labels"));
          },
          py::arg("labels"))
      .def_property_readonly("n_actions", &TransitionSystem::n_actions)
      .def_property_readonly("moves",
                             [](const TransitionSystem& s) {
                               py::array_t<std::uint8_t> out(s.n_actions());
                               for (int i = 0; i < s.n_actions(); ++i) {
                                 out.mutable_at(i) = static_cast<std::uint8_t>(s.action(i).move);
                               }
                               return out;
                             })
      .def_property_readonly("labels",
                             [](const TransitionSystem& s) {
                               py::array_t<std::uint64_t> out(s.n_actions());
                               for (int i = 0; i < s.n_actions(); ++i) {
                                 out.mutable_at(i) = s.action(i).label;
                               }
                               return out;
                             })
      .def("trace", &trace, py::arg("docs"), py::arg("doc"), py::arg("history"),
           py::arg("gold") = py::none(),
           "Walk `history` from the start of document `doc`: (valid, costs or None, context).")
      .def(
          "entities",
          [](const TransitionSystem& s, const IntArray& history, std::int32_t length) {
            const auto hist = int_vector<std::int32_t>(history, "history");
            for (std::size_t i = 0; i < hist.size(); ++i) {
              if (hist[i] < 0 || hist[i] >= s.n_actions()) {
                throw py::value_error(
                    "history[" + std::to_string(i) + "] = " + std::to_string(hist[i]) +
                    " is not an action index (0.." + std::to_string(s.n_actions() - 1) + ")");
              }
            }
            py::typing::List<EntityTuple> out;
            for (const Entity& e : s.entities(hist.data(), hist.size(), length)) {
              out.append(py::make_tuple(e.start, e.end, e.label));
            }
            return out;
          },
          py::arg("history"), py::arg("length"));
}

}  // namespace beamner::python
