#include <pybind11/stl.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "beamner/beam.hpp"
#include "common.hpp"

namespace beamner::python {

namespace {

// The GIL is released inside native loops, so two Python threads could
// reach one batch at once; the second gets an error instead of a data race.
// Every method that reads the beams takes the lock (bound through `locked`),
// not only the ones that change them: a read during another thread's
// advance would race with it.
using PyBeamBatch = Guarded<BeamBatch>;

std::unique_ptr<PyBeamBatch> make_batch(const TransitionSystem& system, const DocBatch& docs,
                                        int width, float density,
                                        const std::optional<std::vector<Gold>>& golds,
                                        bool follow_gold, bool compact_history,
                                        const std::string& normalize) {
  BeamOptions options;
  options.normalize = parse_normalize(normalize);
  options.compact_history = compact_history;
  options.width = width;
  options.density = density;
  options.follow_gold = follow_gold;
  return std::make_unique<PyBeamBatch>(
      BeamBatch(system, docs, options, golds.value_or(std::vector<Gold>{})), "BeamBatch");
}

void expect_shape(const py::array& a, const char* name, std::initializer_list<py::ssize_t> shape) {
  std::size_t i = 0;
  bool ok = static_cast<std::size_t>(a.ndim()) == shape.size();
  for (py::ssize_t dim : shape) ok = ok && a.shape(static_cast<py::ssize_t>(i++)) == dim;
  if (!ok) {
    std::string want = "(";
    i = 0;
    for (py::ssize_t dim : shape) want += (i++ ? ", " : "") + std::to_string(dim);
    throw py::value_error(std::string(name) + " must have shape " + want +
                          (shape.size() == 1 ? ",)" : ")") + ", got " + shape_of(a));
  }
}

// thinc computes the upper layer with cython-blis; its `blis.cy.sgemm` is
// exported through Cython's C-API capsules, so the native search can call
// the same kernel and get spaCy's scores bit for bit.
SgemmFn blis_sgemm() {
  static const char* const kSignature =
      "void (int, int, int, int, int, float, float const *, int, float const *, int, float, "
      "float *, int)";
  py::object capsule = py::module_::import("blis.cy").attr("__pyx_capi__")["sgemm"];
  const char* name = PyCapsule_GetName(capsule.ptr());
  if (name == nullptr || std::string(name) != kSignature) {
    throw std::runtime_error(std::string("blis.cy.sgemm has an unexpected signature: ") +
                             (name != nullptr ? name : "(none)"));
  }
  return reinterpret_cast<SgemmFn>(PyCapsule_GetPointer(capsule.ptr(), name));
}

void run_precomputed(BeamBatch& batch, const FloatArray& features_obj,
                     const FloatArray& lower_bias_obj, const FloatArrayOrNone& upper_W_obj,
                     const FloatArrayOrNone& upper_b_obj, const FloatArrayOrNone& class_mask_obj,
                     bool use_blis) {
  py::array_t<float> features = float_array(features_obj, "features", 4);
  PrecomputedModel model;
  model.features = features.data();
  model.n_rows = features.shape(0);
  model.nF = static_cast<int>(features.shape(1));
  model.nO = static_cast<int>(features.shape(2));
  model.nP = static_cast<int>(features.shape(3));
  const std::int64_t n_tokens = batch.docs().n_tokens();
  if (model.n_rows != n_tokens + 1) {
    throw py::value_error("features must have one row per token plus the padding row (" +
                          std::to_string(n_tokens + 1) + "), got " + std::to_string(model.n_rows));
  }
  py::array_t<float> lower_bias = float_array(lower_bias_obj, "lower_bias", 2);
  expect_shape(lower_bias, "lower_bias", {model.nO, model.nP});
  model.lower_bias = lower_bias.data();
  py::array_t<float> upper_W, upper_b, class_mask;
  if (upper_W_obj.is_none() != upper_b_obj.is_none()) {
    throw py::value_error(
        std::string("upper_W and upper_b must be given together (or both None), got ") +
        (upper_W_obj.is_none() ? "upper_W=None" : "an upper_W") + " and " +
        (upper_b_obj.is_none() ? "upper_b=None" : "an upper_b"));
  }
  model.n_classes = model.nO;
  if (!upper_W_obj.is_none()) {
    upper_W = float_array(upper_W_obj, "upper_W", 2);
    model.n_classes = static_cast<int>(upper_W.shape(0));
    expect_shape(upper_W, "upper_W", {model.n_classes, model.nO});
    upper_b = float_array(upper_b_obj, "upper_b", 1);
    expect_shape(upper_b, "upper_b", {model.n_classes});
    model.upper_W = upper_W.data();
    model.upper_b = upper_b.data();
  }
  if (!class_mask_obj.is_none()) {
    class_mask = float_array(class_mask_obj, "class_mask", 1);
    expect_shape(class_mask, "class_mask", {model.n_classes});
    model.class_mask = class_mask.data();
  }
  if (use_blis) model.sgemm = blis_sgemm();
  PrecomputedScorer scorer(model);
  py::gil_scoped_release release;
  batch.run(scorer);
}

// The GEMM run_precomputed would use for this upper layer: the choice
// depends only on upper_W and the sgemm, so a scorer over dummy features tells.
std::string upper_gemm_kernel(const FloatArray& upper_W_obj, bool use_blis) {
  py::array_t<float> upper_W = float_array(upper_W_obj, "upper_W", 2);
  PrecomputedModel model;
  model.n_classes = static_cast<int>(upper_W.shape(0));
  model.nO = static_cast<int>(upper_W.shape(1));
  model.nF = kNumContextFeatures;
  model.nP = 1;
  model.n_rows = 1;
  const std::vector<float> features(static_cast<std::size_t>(model.nF * model.nO), 0.0f);
  const std::vector<float> zeros(static_cast<std::size_t>(std::max(model.nO, model.n_classes)),
                                 0.0f);
  model.features = features.data();
  model.lower_bias = zeros.data();
  model.upper_W = upper_W.data();
  model.upper_b = zeros.data();
  if (use_blis) model.sgemm = blis_sgemm();
  return PrecomputedScorer(model).gemm_name();
}

py::typing::List<Parse> parses(BeamBatch& batch, int doc) {
  py::typing::List<Parse> out;
  for (Parse& p : batch.parses(doc)) out.append(std::move(p));
  return out;
}

// Every NER action consumes one token, so a document's histories form a
// (k, n_tokens) matrix: cheap to hand to the Cython side in one piece.
py::typing::Tuple<py::array_t<float>, py::array_t<double>, py::array_t<std::int32_t>> beam_arrays(
    BeamBatch& batch, int doc) {
  const std::vector<Parse> parses = batch.parses(doc);
  const auto k = static_cast<py::ssize_t>(parses.size());
  const auto n = static_cast<py::ssize_t>(parses.empty() ? 0 : parses[0].history.size());
  py::array_t<float> scores(k);
  py::array_t<double> probs(k);
  py::array_t<std::int32_t> histories({k, n});
  for (py::ssize_t i = 0; i < k; ++i) {
    const Parse& p = parses[static_cast<std::size_t>(i)];
    if (static_cast<py::ssize_t>(p.history.size()) != n) {
      throw std::logic_error("parses of one document have histories of different lengths");
    }
    scores.mutable_at(i) = p.score;
    probs.mutable_at(i) = p.probability;
    if (n > 0) std::copy(p.history.begin(), p.history.end(), histories.mutable_data(i, 0));
  }
  return py::make_tuple(scores, probs, histories);
}

void constrain(BeamBatch& batch, int doc, const std::vector<std::pair<int, int>>& forced,
               const std::vector<std::pair<int, int>>& forbidden) {
  std::vector<SpanConstraint> spans;
  spans.reserve(forced.size() + forbidden.size());
  for (const auto& [start, end] : forced) spans.push_back({start, end, true});
  for (const auto& [start, end] : forbidden) spans.push_back({start, end, false});
  // pybind11: out_of_range -> IndexError, invalid_argument -> ValueError, logic_error ->
  // RuntimeError (constraints after the first step).
  batch.constrain(doc, spans);
}

py::typing::Dict<EntityTuple, py::typing::Tuple<double, double>> entity_bounds(BeamBatch& batch,
                                                                               int doc) {
  py::typing::Dict<EntityTuple, py::typing::Tuple<double, double>> out;
  for (const EntityBounds& b : batch.entity_bounds(doc)) {
    out[py::make_tuple(b.entity.start, b.entity.end, b.entity.label)] =
        py::make_tuple(b.lower, b.upper);
  }
  return out;
}

py::typing::Dict<EntityTuple, double> entity_probabilities(BeamBatch& batch, int doc) {
  py::typing::Dict<EntityTuple, double> out;
  for (const auto& [e, prob] : batch.entity_probabilities(doc)) {
    out[py::make_tuple(e.start, e.end, e.label)] = prob;
  }
  return out;
}

py::array_t<std::int32_t> context_tokens(BeamBatch& batch) {
  py::array_t<std::int32_t> out({static_cast<py::ssize_t>(batch.n_unfinished()),
                                 static_cast<py::ssize_t>(kNumContextFeatures)});
  batch.context_tokens(out.mutable_data());
  return out;
}

py::array_t<bool> valid_actions(BeamBatch& batch) {
  const auto n = static_cast<py::ssize_t>(batch.n_unfinished());
  std::vector<std::uint8_t> valid(static_cast<std::size_t>(n * batch.n_actions()));
  batch.valid_actions(valid.data());
  py::array_t<bool> out({n, static_cast<py::ssize_t>(batch.n_actions())});
  std::copy(valid.begin(), valid.end(), out.mutable_data());
  return out;
}

py::array_t<float> costs(BeamBatch& batch) {
  py::array_t<float> out({static_cast<py::ssize_t>(batch.n_unfinished()),
                          static_cast<py::ssize_t>(batch.n_actions())});
  batch.costs(out.mutable_data());
  return out;
}

py::typing::List<EntityTuple> entity_list(const std::vector<Entity>& entities) {
  py::typing::List<EntityTuple> out;
  for (const Entity& e : entities) out.append(py::make_tuple(e.start, e.end, e.label));
  return out;
}

}  // namespace

void bind_beam_batch(py::module_& m) {
  m.def("upper_gemm_kernel", &upper_gemm_kernel, py::arg("upper_W"), py::arg("use_blis") = true,
        "The GEMM BeamBatch.run_precomputed uses for this (n_classes, nO) upper_W: 'blis',\n"
        "'cblas', or 'sequential-<isa>' (beamner's kernel, chosen where it gives blis' result\n"
        "bit for bit on this CPU).");
  py::class_<Parse>(m, "Parse", "One parse of a document's final beam.")
      .def_readonly("score", &Parse::score)
      .def_readonly("probability", &Parse::probability)
      .def_readonly("loss", &Parse::loss)
      .def_property_readonly("history",
                             [](const Parse& p) {
                               return py::array_t<std::int32_t>(
                                   static_cast<py::ssize_t>(p.history.size()), p.history.data());
                             })
      .def_property_readonly("entities", [](const Parse& p) { return entity_list(p.entities); })
      .def("__repr__", [](const Parse& p) {
        return "Parse(score=" + std::to_string(p.score) +
               ", probability=" + std::to_string(p.probability) +
               ", n_entities=" + std::to_string(p.entities.size()) + ")";
      });

  py::class_<PyBeamBatch>(m, "BeamBatch",
                          "Beam search over many documents with thinc's Beam semantics.")
      .def(py::init(&make_batch), py::arg("system"), py::arg("docs"), py::arg("width") = 1,
           py::arg("density") = 0.0f, py::arg("golds") = py::none(), py::arg("follow_gold") = false,
           py::arg("compact_history") = true, py::arg("normalize") = "none")
      .def_property_readonly("n_docs", [](const PyBeamBatch& b) { return b.value.n_docs(); })
      .def_property_readonly("n_actions", [](const PyBeamBatch& b) { return b.value.n_actions(); })
      .def_property_readonly("width", [](const PyBeamBatch& b) { return b.value.options().width; })
      .def_property_readonly("density",
                             [](const PyBeamBatch& b) { return b.value.options().density; })
      .def_property_readonly(
          "normalize",
          [](const PyBeamBatch& b) { return normalize_name(b.value.options().normalize); },
          "'none' (raw scores, spaCy's beam) or 'local' (log-softmax over valid actions).")
      .def_property_readonly("is_done", locked(&BeamBatch::is_done))
      .def_property_readonly("n_steps", locked(&BeamBatch::n_steps))
      .def("history_nodes", locked(&BeamBatch::history_nodes), py::arg("doc"),
           "History nodes the document's beam holds now (memory diagnostics).")
      .def_property_readonly("n_unfinished", locked(&BeamBatch::n_unfinished))
      .def("context_tokens", locked(&context_tokens),
           "(n_unfinished, 3) int32 context token ids with batch offsets, -1 for padding.")
      .def("valid_actions", locked(&valid_actions),
           "(n_unfinished, n_actions) bool: which actions each unfinished state may take.")
      .def("costs", locked(&costs),
           "(n_unfinished, n_actions) float32 oracle costs (9000 for invalid actions).")
      .def("constrain", locked(&constrain), py::arg("doc"),
           py::arg("forced") = std::vector<std::pair<int, int>>{},
           py::arg("forbidden") = std::vector<std::pair<int, int>>{},
           "Before the first step: every parse of document `doc` labels each forced (start, end)\n"
           "as an entity and no forbidden one (a validity mask applied after normalization, so\n"
           "parses keep their unconstrained scores). A document whose constraints no parse can\n"
           "meet finishes with no parses (is_infeasible).")
      .def("is_infeasible", locked(&BeamBatch::is_infeasible), py::arg("doc"),
           "Whether the document's span constraints ruled out every parse.")
      .def("advance", locked(&advance_released<BeamBatch>), py::arg("scores"),
           "One step with a C-contiguous float32 (n_unfinished, n_actions) score matrix.")
      .def("run_precomputed", locked(&run_precomputed), py::arg("features"), py::arg("lower_bias"),
           py::arg("upper_W") = py::none(), py::arg("upper_b") = py::none(),
           py::arg("class_mask") = py::none(), py::arg("use_blis") = true,
           "Run to the end natively, scoring with the precomputed lower layer and the upper\n"
           "layer (through thinc's blis sgemm when use_blis, else the linked CBLAS).")
      .def("parses", locked(&parses), py::arg("doc"), "The document's final beam, best first.")
      .def("beam_arrays", locked(&beam_arrays), py::arg("doc"),
           "(scores (k,) float32, probabilities (k,) float64, histories (k, n_tokens) int32).")
      .def("entity_probabilities", locked(&entity_probabilities), py::arg("doc"),
           "{(start, end, label): probability summed over the beam's parses}.")
      .def("coverage", locked(&BeamBatch::coverage), py::arg("doc"),
           "normalize='local' only (else ValueError): the model probability the document's\n"
           "final beam holds, sum of exp(score) over its parses.")
      .def("entity_bounds", locked(&entity_bounds), py::arg("doc"),
           "normalize='local' only (else ValueError): {(start, end, label): (lower, upper)},\n"
           "the interval the entity's marginal under the model lies in: the mass of the beam's\n"
           "parses holding it, and that plus 1 - coverage.");
}

}  // namespace beamner::python
