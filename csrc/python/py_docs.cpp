#include <pybind11/stl.h>

#include "beamner/doc.hpp"
#include "common.hpp"

namespace beamner::python {

namespace {

DocBatch make_doc_batch(const IntArray& ent_iob, const IntArray& ent_type,
                        const IntArray& sent_start, const IntOrBoolArray& is_space,
                        const IntArray& lengths, const IntArrayOrNone& offsets) {
  const auto iob = int_vector<std::int8_t>(ent_iob, "ent_iob");
  const auto type = int_vector<std::uint64_t>(ent_type, "ent_type");
  const auto sent = int_vector<std::int8_t>(sent_start, "sent_start");
  const auto space = int_vector<std::uint8_t>(is_space, "is_space");
  const auto lens = int_vector<std::int32_t>(lengths, "lengths");
  const std::size_t n = iob.size();
  if (type.size() != n || sent.size() != n || space.size() != n) {
    throw py::value_error(
        "ent_iob, ent_type, sent_start and is_space must have the same length, got " +
        std::to_string(n) + ", " + std::to_string(type.size()) + ", " +
        std::to_string(sent.size()) + ", " + std::to_string(space.size()));
  }
  std::vector<TokenInfo> tokens(n);
  for (std::size_t i = 0; i < n; ++i) {
    tokens[i].ent_iob = iob[i];
    tokens[i].ent_type = type[i];
    tokens[i].sent_start = sent[i];
    tokens[i].is_space = space[i] != 0;
  }
  if (offsets.is_none()) return DocBatch(std::move(tokens), lens);
  return DocBatch(std::move(tokens), lens, int_vector<std::int32_t>(offsets, "offsets"));
}

Gold make_gold(const IntArray& moves, const IntArray& labels, const IntArrayOrNone& negatives,
               const IntArrayOrNone& negative_labels) {
  const auto mv = int_vector<std::uint8_t>(moves, "moves");
  const auto lb = int_vector<std::uint64_t>(labels, "labels");
  if (mv.size() != lb.size()) {
    throw py::value_error("moves and labels must have the same length, got " +
                          std::to_string(mv.size()) + " and " + std::to_string(lb.size()));
  }
  Gold gold;
  gold.ner.resize(mv.size());
  for (std::size_t i = 0; i < mv.size(); ++i) {
    if (mv[i] >= kNumMoves) {
      throw py::value_error("moves[" + std::to_string(i) + "] = " + std::to_string(mv[i]) +
                            " is not a move (0..5: M, B, I, L, U, O)");
    }
    gold.ner[i] = {static_cast<Move>(mv[i]), lb[i]};
  }
  if (!negatives.is_none()) {
    py::array spans = as_array(negatives, "negatives");
    if (spans.ndim() != 2 || spans.shape(1) != 2) {
      throw py::value_error("negatives must have shape (n, 2) of [start, end), got " +
                            shape_of(spans));
    }
    const auto flat = int_vector<std::int32_t>(spans.attr("reshape")(-1), "negatives");
    const auto nl = negative_labels.is_none()
                        ? std::vector<std::uint64_t>()
                        : int_vector<std::uint64_t>(negative_labels, "negative_labels");
    if (nl.size() * 2 != flat.size()) {
      throw py::value_error("negative_labels must have one label per negative span (" +
                            std::to_string(flat.size() / 2) + "), got " +
                            std::to_string(nl.size()));
    }
    for (std::size_t i = 0; i < nl.size(); ++i) {
      const Entity e{flat[2 * i], flat[2 * i + 1], nl[i]};
      if (e.start < 0 || e.end <= e.start || e.end > static_cast<std::int32_t>(mv.size())) {
        throw py::value_error("negative span " + std::to_string(i) + " [" +
                              std::to_string(e.start) + ", " + std::to_string(e.end) +
                              ") is outside the document of " + std::to_string(mv.size()) +
                              " tokens");
      }
      gold.negatives.push_back(e);
    }
  }
  return gold;
}

}  // namespace

void bind_docs(py::module_& m) {
  py::class_<DocBatch>(m, "DocBatch",
                       "Per-token inputs of many documents, concatenated (see beamner.docs).")
      .def(py::init(&make_doc_batch), py::arg("ent_iob"), py::arg("ent_type"),
           py::arg("sent_start"), py::arg("is_space"), py::arg("lengths"),
           py::arg("offsets") = py::none())
      .def_property_readonly("n_docs", &DocBatch::n_docs)
      .def_property_readonly("n_tokens", &DocBatch::n_tokens)
      .def_property_readonly("lengths", [](const DocBatch& d) {
        std::vector<std::int32_t> out;
        for (int i = 0; i < d.n_docs(); ++i) out.push_back(d.length(i));
        return py::array_t<std::int32_t>(static_cast<py::ssize_t>(out.size()), out.data());
      });

  py::class_<Gold>(m, "Gold", "Gold actions of one document for the dynamic oracle.")
      .def(py::init(&make_gold), py::arg("moves"), py::arg("labels"),
           py::arg("negatives") = py::none(), py::arg("negative_labels") = py::none())
      .def_property_readonly("n_tokens", [](const Gold& g) { return g.ner.size(); })
      .def_property_readonly("n_negatives", [](const Gold& g) { return g.negatives.size(); });
}

}  // namespace beamner::python
