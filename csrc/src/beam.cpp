// spaCy's BeamBatch (spacy/pipeline/_parser_internals/_beam_utils.pyx) over
// the generic k-best beam: validity and costs from the transition system,
// the step transforms, and the checks that keep a bad step from changing
// anything.
#include "beamner/beam.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "check.hpp"

namespace beamner {
namespace {

// isfinite on the bits, so that loops over whole score matrices vectorise.
inline bool is_finite(float x) {
  std::uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return (bits & 0x7f800000u) != 0x7f800000u;
}

bool all_finite(const float* xs, std::int64_t n) {
  unsigned bad = 0;
  for (std::int64_t i = 0; i < n; ++i) bad |= static_cast<unsigned>(!is_finite(xs[i]));
  return bad == 0;
}

void check_golds(const DocBatch& docs, const std::vector<Gold>& golds) {
  if (golds.empty()) return;
  BEAMNER_THROW_IF(static_cast<int>(golds.size()) != docs.n_docs(), std::invalid_argument,
                   "expected one gold per document (", docs.n_docs(), "), got ", golds.size());
  for (int d = 0; d < docs.n_docs(); ++d) {
    const Gold& g = golds[static_cast<std::size_t>(d)];
    BEAMNER_THROW_IF(static_cast<std::int64_t>(g.ner.size()) != docs.length(d),
                     std::invalid_argument, "gold ", d, " has ", g.ner.size(),
                     " tags for a document of ", docs.length(d), " tokens");
    for (std::size_t i = 0; i < g.ner.size(); ++i) {
      const int move = static_cast<int>(g.ner[i].move);
      BEAMNER_THROW_IF(move < 0 || move >= kNumMoves, std::invalid_argument, "gold ", d, ", token ",
                       i, ": move must be 0..5, got ", move);
    }
    for (const Entity& e : g.negatives) {
      BEAMNER_THROW_IF(e.start < 0 || e.end <= e.start || e.end > docs.length(d),
                       std::invalid_argument, "gold ", d, ": negative span [", e.start, ", ", e.end,
                       ") is outside the document of ", docs.length(d), " tokens");
    }
  }
}

}  // namespace

BeamBatch::BeamBatch(const TransitionSystem& system, DocBatch docs, BeamOptions options,
                     std::vector<Gold> golds)
    : system_(system), docs_(std::move(docs)), options_(options), golds_(std::move(golds)) {
  BEAMNER_THROW_IF(options_.width < 1, std::invalid_argument, "beam width must be >= 1, got ",
                   options_.width);
  BEAMNER_THROW_IF(options_.width > BeamOptions::kMaxWidth, std::invalid_argument,
                   "beam width must be <= ", BeamOptions::kMaxWidth, ", got ", options_.width);
  BEAMNER_THROW_IF(!(options_.density >= 0.0f && options_.density <= 1.0f), std::invalid_argument,
                   "beam density must be in [0, 1], got ", options_.density);
  BEAMNER_THROW_IF(
      options_.normalize != Normalize::kNone && options_.normalize != Normalize::kLocal,
      std::invalid_argument, "normalize must be Normalize::kNone or Normalize::kLocal, got ",
      static_cast<int>(options_.normalize));
  BEAMNER_THROW_IF(options_.follow_gold && golds_.empty(), std::invalid_argument,
                   "follow_gold needs golds (one per document), got none");
  check_golds(docs_, golds_);
  kbest_.width = options_.width;
  kbest_.density = options_.density;
  kbest_.compact_history = options_.compact_history;
  // The normalized beam promises thinc's semantics, not libm's last bits:
  // its density exps come from the vectorised kernel (within 2 ulp).
  kbest_.exp =
      options_.normalize == Normalize::kLocal ? DensityExp::kVectorised : DensityExp::kLibm;
  infeasible_.assign(static_cast<std::size_t>(docs_.n_docs()), 0);
  beams_.reserve(static_cast<std::size_t>(docs_.n_docs()));
  for (int d = 0; d < docs_.n_docs(); ++d) {
    const State first = State::initial(docs_.length(d));
    beams_.emplace_back(first, first.is_final(), options_.width);
  }
}

void BeamBatch::check_doc(int doc) const {
  BEAMNER_THROW_IF(doc < 0 || doc >= n_docs(), std::out_of_range, "document index ", doc,
                   " out of range for ", n_docs(), " documents");
}

const Beam<State>& BeamBatch::beam(int doc) const {
  check_doc(doc);
  return beams_[static_cast<std::size_t>(doc)];
}

template <typename F>
void BeamBatch::for_each_row(F&& f) const {
  std::size_t row = 0;
  for (int d = 0; d < n_docs(); ++d) {
    const Beam<State>& beam = beams_[static_cast<std::size_t>(d)];
    if (beam.is_done()) continue;
    for (const Beam<State>::Slot& slot : beam.slots()) {
      if (!slot.done) f(d, slot, row++);
    }
  }
}

bool BeamBatch::is_done() const {
  for (const Beam<State>& beam : beams_) {
    if (!beam.is_done()) return false;
  }
  return true;
}

std::int64_t BeamBatch::n_unfinished() const {
  std::int64_t n = 0;
  for (const Beam<State>& beam : beams_) {
    if (!beam.is_done()) n += static_cast<std::int64_t>(beam.n_unfinished());
  }
  return n;
}

void BeamBatch::context_tokens(std::int32_t* out) const {
  for_each_row([&](int d, const Beam<State>::Slot& slot, std::size_t row) {
    slot.state.context_tokens(out + row * kNumContextFeatures, docs_.offset(d));
  });
}

void BeamBatch::compute_valid(std::uint8_t* valid_out, float* costs_out) const {
  const auto width = static_cast<std::size_t>(n_actions());
  std::vector<float> scratch(golds_.empty() || costs_out != nullptr ? 0 : width);
  for_each_row([&](int d, const Beam<State>::Slot& slot, std::size_t row) {
    std::uint8_t* valid = valid_out + row * width;
    if (golds_.empty()) {
      system_.set_valid(slot.state, docs_.tokens(d), valid);
      return;
    }
    float* costs = costs_out != nullptr ? costs_out + row * width : scratch.data();
    system_.set_costs(slot.state, docs_.tokens(d), golds_[static_cast<std::size_t>(d)], valid,
                      costs);
    if (options_.follow_gold) {
      // spaCy's BeamBatch._set_costs(follow_gold=True): keep the cheapest
      // valid actions, starting from a minimum of 0.
      float min_cost = 0.0f;
      for (std::size_t j = 0; j < width; ++j) {
        if (valid[j] && costs[j] < min_cost) min_cost = costs[j];
      }
      for (std::size_t j = 0; j < width; ++j) {
        if (costs[j] > min_cost) valid[j] = 0;
      }
    }
  });
}

void BeamBatch::apply_constraints(std::uint8_t* valid, std::vector<StepRow>& rows) const {
  if (!constraints_.any()) return;
  rows.clear();
  for_each_row([&](int d, const Beam<State>::Slot& slot, std::size_t) {
    rows.push_back({d, &slot.state});
  });
  Step step;
  step.valid = valid;
  step.n_rows = static_cast<std::int64_t>(rows.size());
  step.n_cols = n_actions();
  step.rows = rows.data();
  step.system = &system_;
  step.docs = &docs_;
  constraints_.apply(step);
}

void BeamBatch::valid_actions(std::uint8_t* out) const {
  compute_valid(out, nullptr);
  std::vector<StepRow> rows;
  apply_constraints(out, rows);
}

void BeamBatch::costs(float* out) const {
  BEAMNER_THROW_IF(golds_.empty(), std::logic_error,
                   "costs need golds, but this batch was built without them");
  std::vector<std::uint8_t> valid(static_cast<std::size_t>(n_unfinished()) *
                                  static_cast<std::size_t>(n_actions()));
  compute_valid(valid.data(), out);
}

bool BeamBatch::check_step(int d, const float* scores, const std::uint8_t* valid_all,
                           std::size_t& row) const {
  const Beam<State>& beam = beams_[static_cast<std::size_t>(d)];
  const auto width = static_cast<std::size_t>(n_actions());
  BEAMNER_THROW_IF(
      beam.history().size() + static_cast<std::size_t>(options_.width) > History::kMaxNodes,
      std::length_error, "document ", d, ": its beam history would exceed ", History::kMaxNodes,
      " nodes (int32 ids)");
  bool any = false;
  std::int32_t pos = -1;
  for (const Beam<State>::Slot& slot : beam.slots()) {
    if (slot.done) {
      any = true;
      continue;
    }
    pos = slot.state.pos;
    const std::uint8_t* valid = valid_all + row * width;
    const float* r = scores + row * width;
    // A finite score can still overflow the float32 running sum; an infinite
    // beam score would turn the softmax and the ordering into NaN. Checked
    // without branches first (the common case), then located.
    unsigned n_valid = 0;
    unsigned overflows = 0;
    for (std::size_t j = 0; j < width; ++j) {
      n_valid += valid[j];
      overflows |= valid[j] & static_cast<unsigned>(!is_finite(slot.score + r[j]));
    }
    any = any || n_valid > 0;
    for (std::size_t j = 0; overflows != 0 && j < width; ++j) {
      BEAMNER_THROW_IF(valid[j] && !std::isfinite(slot.score + r[j]), std::invalid_argument,
                       "score at row ", row, ", column ", j, " (", r[j],
                       ") overflows the beam score ", slot.score, " of document ", d,
                       "; scores must keep the running sum finite (float32)");
    }
    ++row;
  }
  if (any || constraints_.constrains(d)) return any;
  throw std::invalid_argument(
      "document " + std::to_string(d) + ": no valid action at token " + std::to_string(pos) +
      (options_.follow_gold ? " that follows the gold annotation"
                            : "; its preset entities (ent_iob/ent_type) are inconsistent"));
}

void BeamBatch::advance(const float* scores, std::int64_t n_rows, std::int64_t n_cols) {
  const std::int64_t expected_rows = n_unfinished();
  BEAMNER_THROW_IF(n_cols != n_actions() || n_rows != expected_rows, std::invalid_argument,
                   "scores must have shape (", expected_rows, ", ", n_actions(),
                   ") for the unfinished states, got (", n_rows, ", ", n_cols, ")");
  if (expected_rows == 0) return;
  const std::int64_t n_cells = n_rows * n_cols;
  if (!all_finite(scores, n_cells)) {
    std::int64_t i = 0;
    while (std::isfinite(scores[i])) ++i;
    BEAMNER_THROW_IF(true, std::invalid_argument, "score at row ", i / n_cols, ", column ",
                     i % n_cols, " is ", scores[i], "; scores must be finite");
  }
  const auto n_valid_cells = static_cast<std::size_t>(n_cells);
  valid_.resize(n_valid_cells);
  costs_.assign(golds_.empty() ? 0 : n_valid_cells, 0.0f);
  compute_valid(valid_.data(), costs_.empty() ? nullptr : costs_.data());
  Step step;
  step.scores = scores;
  step.valid = valid_.data();
  step.n_rows = n_rows;
  step.n_cols = n_cols;
  if (options_.normalize == Normalize::kLocal) normalization_.apply(step);
  scores = step.scores;
  // Span constraints mask after the normalization: under kLocal a constrained
  // parse keeps its model log-probability (the softmax is over spaCy's valid
  // actions, not the constrained ones).
  apply_constraints(valid_.data(), rows_);
  // Every document must keep at least one candidate, or thinc's beam would
  // end up empty; check all before changing anything.
  infeasible_now_.assign(static_cast<std::size_t>(n_docs()), 0);
  std::size_t row = 0;
  for (int d = 0; d < n_docs(); ++d) {
    if (beams_[static_cast<std::size_t>(d)].is_done()) continue;
    // A constrained document without a move: no parse meets its constraints.
    infeasible_now_[static_cast<std::size_t>(d)] = !check_step(d, scores, valid_.data(), row);
  }
  const auto width = static_cast<std::size_t>(n_actions());
  const auto apply = [this](State& state, std::int32_t clas) {
    system_.apply(state, clas);
    return state.is_final();
  };
  row = 0;
  for (int d = 0; d < n_docs(); ++d) {
    Beam<State>& beam = beams_[static_cast<std::size_t>(d)];
    if (beam.is_done()) continue;
    const std::size_t n_rows_doc = beam.n_unfinished();
    if (infeasible_now_[static_cast<std::size_t>(d)]) {
      beam.clear();
      infeasible_[static_cast<std::size_t>(d)] = 1;
    } else {
      beam.advance(scores + row * width, valid_.data() + row * width,
                   costs_.empty() ? nullptr : costs_.data() + row * width, width, kbest_, scratch_,
                   apply);
    }
    row += n_rows_doc;
  }
  ++steps_;
}

void BeamBatch::run(Scorer& scorer) {
  BEAMNER_THROW_IF(scorer.n_classes() != n_actions(), std::invalid_argument, "scorer gives ",
                   scorer.n_classes(), " classes but the transition table has ", n_actions());
  std::vector<std::int32_t> context;
  std::vector<float> scores;
  while (!is_done()) {
    const std::int64_t n = n_unfinished();
    if (n == 0) break;
    context.resize(static_cast<std::size_t>(n) * kNumContextFeatures);
    scores.resize(static_cast<std::size_t>(n) * static_cast<std::size_t>(n_actions()));
    context_tokens(context.data());
    scorer.score(context.data(), n, scores.data());
    advance(scores.data(), n, n_actions());
  }
}

std::size_t BeamBatch::history_nodes(int doc) const { return beam(doc).history().size(); }

std::vector<Parse> BeamBatch::parses(int doc) const {
  const Beam<State>& beam = this->beam(doc);
  const auto& slots = beam.slots();
  if (slots.empty()) return {};  // infeasible span constraints
  std::vector<Parse> out(slots.size());
  // thinc's Beam.probs: softmax over the beam's scores, in double.
  double max_ = slots[0].score;
  for (const auto& s : slots) max_ = std::max(max_, static_cast<double>(s.score));
  double Z = 0.0;
  for (const auto& s : slots) Z += std::exp(s.score - max_);
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const auto& s = slots[i];
    Parse& p = out[i];
    p.score = s.score;
    p.probability = std::exp(s.score - max_) / Z;
    p.loss = s.loss;
    p.history = beam.history().path(s.node);
    p.entities = system_.entities(p.history.data(), p.history.size(), s.state.length);
  }
  return out;
}

void BeamBatch::require_normalized(const char* what) const {
  BEAMNER_THROW_IF(options_.normalize != Normalize::kLocal, std::invalid_argument, what,
                   " needs normalize='local': with normalize='none' the beam adds "
                   "raw scores, which are not log-probabilities");
}

double BeamBatch::coverage(int doc) const {
  require_normalized("coverage");
  double total = 0.0;
  for (const Parse& p : parses(doc)) total += std::exp(static_cast<double>(p.score));
  return total;
}

std::vector<std::pair<Entity, std::size_t>> BeamBatch::sorted_entities(
    const std::vector<Parse>& parses) {
  std::vector<std::pair<Entity, std::size_t>> items;
  for (std::size_t i = 0; i < parses.size(); ++i) {
    for (const Entity& e : parses[i].entities) items.emplace_back(e, i);
  }
  std::stable_sort(items.begin(), items.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  return items;
}

std::vector<EntityBounds> BeamBatch::entity_bounds(int doc) const {
  require_normalized("entity bounds");
  const std::vector<Parse> beam = parses(doc);
  double covered = 0.0;
  for (const Parse& p : beam) covered += std::exp(static_cast<double>(p.score));
  // Float32 score sums may put the coverage a rounding error above 1.
  const double missing = std::max(0.0, 1.0 - covered);
  std::vector<EntityBounds> out;
  for (const auto& [entity, i] : sorted_entities(beam)) {
    const Parse& p = beam[i];
    if (out.empty() || !(out.back().entity == entity)) out.push_back({entity, 0.0, 0.0, 0.0});
    out.back().probability += p.probability;
    out.back().lower += std::exp(static_cast<double>(p.score));
  }
  for (EntityBounds& b : out) {
    b.lower = std::min(1.0, b.lower);
    b.upper = std::min(1.0, b.lower + missing);
  }
  return out;
}

std::vector<std::pair<Entity, double>> BeamBatch::entity_probabilities(int doc) const {
  const std::vector<Parse> beam = parses(doc);
  // Each entity's probabilities add up in beam order.
  std::vector<std::pair<Entity, double>> merged;
  for (const auto& [entity, i] : sorted_entities(beam)) {
    if (merged.empty() || !(merged.back().first == entity)) merged.emplace_back(entity, 0.0);
    merged.back().second += beam[i].probability;
  }
  return merged;
}

void BeamBatch::constrain(int doc, const std::vector<SpanConstraint>& spans) {
  check_doc(doc);
  BEAMNER_THROW_IF(steps_ > 0, std::logic_error,
                   "span constraints must be set before the first step (", steps_, " taken)");
  constraints_.add(doc, docs_.length(doc), n_docs(), spans);
}

bool BeamBatch::is_infeasible(int doc) const {
  check_doc(doc);
  return infeasible_[static_cast<std::size_t>(doc)] != 0;
}

}  // namespace beamner
