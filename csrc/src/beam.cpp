// Beam expansion with thinc's Beam semantics (thinc/extra/search.pyx,
// Beam._fill and Beam.advance) as spaCy's BeamBatch drives it
// (spacy/pipeline/_parser_internals/_beam_utils.pyx). Where thinc's
// arithmetic is float32 or double, ours is the same, so scores agree bit
// for bit given the same score matrices.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "beamner/beam.hpp"
#include "log_softmax.hpp"

namespace beamner {
namespace {

// Node ids are int32: a beam may hold at most this many history nodes.
constexpr std::size_t kMaxHistoryNodes = static_cast<std::size_t>(INT32_MAX);
// Below this many nodes a beam's history is never compacted (16 bytes each).
constexpr std::size_t kMinCompactNodes = 1 << 14;

// thinc pops candidates from a std::priority_queue<pair<float, size_t>>:
// highest score first, ties broken by the larger (slot * n_class + class).
inline bool ranks_before(float score_a, std::uint64_t id_a, float score_b, std::uint64_t id_b) {
  return score_b < score_a || (!(score_a < score_b) && id_b < id_a);
}

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

// A history's hash, extended by one action (splitmix64 finaliser).
inline std::uint64_t extend_hash(std::uint64_t hash, std::int32_t clas) {
  std::uint64_t z = hash + 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(clas);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void check_golds(const DocBatch& docs, const std::vector<Gold>& golds) {
  if (golds.empty()) return;
  if (static_cast<int>(golds.size()) != docs.n_docs()) {
    throw std::invalid_argument("expected one gold per document (" + std::to_string(docs.n_docs()) +
                                "), got " + std::to_string(golds.size()));
  }
  for (int d = 0; d < docs.n_docs(); ++d) {
    const Gold& g = golds[static_cast<std::size_t>(d)];
    if (static_cast<std::int64_t>(g.ner.size()) != docs.length(d)) {
      throw std::invalid_argument("gold " + std::to_string(d) + " has " +
                                  std::to_string(g.ner.size()) + " tags for a document of " +
                                  std::to_string(docs.length(d)) + " tokens");
    }
    for (std::size_t i = 0; i < g.ner.size(); ++i) {
      const int move = static_cast<int>(g.ner[i].move);
      if (move < 0 || move >= kNumMoves) {
        throw std::invalid_argument("gold " + std::to_string(d) + ", token " + std::to_string(i) +
                                    ": move must be 0..5, got " + std::to_string(move));
      }
    }
    for (const Entity& e : g.negatives) {
      if (e.start < 0 || e.end <= e.start || e.end > docs.length(d)) {
        throw std::invalid_argument("gold " + std::to_string(d) + ": negative span [" +
                                    std::to_string(e.start) + ", " + std::to_string(e.end) +
                                    ") is outside the document of " +
                                    std::to_string(docs.length(d)) + " tokens");
      }
    }
  }
}

}  // namespace

const char* normalize_name(Normalize normalize) {
  switch (normalize) {
    case Normalize::kNone:
      return "none";
    case Normalize::kLocal:
      return "local";
  }
  return "?";
}

Normalize parse_normalize(const std::string& name) {
  if (name == "none") return Normalize::kNone;
  if (name == "local") return Normalize::kLocal;
  throw std::invalid_argument("normalize must be 'none' or 'local', got '" + name + "'");
}

BeamBatch::BeamBatch(const TransitionSystem& system, DocBatch docs, BeamOptions options,
                     std::vector<Gold> golds)
    : system_(system), docs_(std::move(docs)), options_(options), golds_(std::move(golds)) {
  if (options_.width < 1) {
    throw std::invalid_argument("beam width must be >= 1, got " + std::to_string(options_.width));
  }
  if (!(options_.density >= 0.0f && options_.density <= 1.0f)) {
    throw std::invalid_argument("beam density must be in [0, 1], got " +
                                std::to_string(options_.density));
  }
  if (options_.normalize != Normalize::kNone && options_.normalize != Normalize::kLocal) {
    throw std::invalid_argument("normalize must be Normalize::kNone or Normalize::kLocal, got " +
                                std::to_string(static_cast<int>(options_.normalize)));
  }
  if (options_.follow_gold && golds_.empty()) {
    throw std::invalid_argument("follow_gold needs golds (one per document), got none");
  }
  check_golds(docs_, golds_);
  beams_.resize(static_cast<std::size_t>(docs_.n_docs()));
  for (int d = 0; d < docs_.n_docs(); ++d) {
    DocBeam& beam = beams_[static_cast<std::size_t>(d)];
    beam.slots.reserve(static_cast<std::size_t>(options_.width));
    beam.next.reserve(static_cast<std::size_t>(options_.width));
    Slot first;
    first.state = State::initial(docs_.length(d));
    first.done = first.state.is_final();
    beam.slots.push_back(first);
    beam.done = first.done;
    beam.compact_at = kMinCompactNodes;
  }
}

bool BeamBatch::is_done() const {
  for (const DocBeam& beam : beams_) {
    if (!beam.done) return false;
  }
  return true;
}

std::int64_t BeamBatch::n_unfinished() const {
  std::int64_t n = 0;
  for (const DocBeam& beam : beams_) {
    if (beam.done) continue;
    for (const Slot& slot : beam.slots) n += !slot.done;
  }
  return n;
}

void BeamBatch::context_tokens(std::int32_t* out) const {
  for (int d = 0; d < n_docs(); ++d) {
    const DocBeam& beam = beams_[static_cast<std::size_t>(d)];
    if (beam.done) continue;
    for (const Slot& slot : beam.slots) {
      if (slot.done) continue;
      slot.state.context_tokens(out, docs_.offset(d));
      out += kNumContextFeatures;
    }
  }
}

void BeamBatch::compute_valid(std::uint8_t* valid_out, float* costs_out) const {
  std::size_t row = 0;
  const auto width = static_cast<std::size_t>(n_actions());
  std::vector<float> scratch(golds_.empty() || costs_out != nullptr ? 0 : width);
  for (int d = 0; d < n_docs(); ++d) {
    const DocBeam& beam = beams_[static_cast<std::size_t>(d)];
    if (beam.done) continue;
    for (const Slot& slot : beam.slots) {
      if (slot.done) continue;
      std::uint8_t* valid = valid_out + row * width;
      if (golds_.empty()) {
        system_.set_valid(slot.state, docs_.tokens(d), valid);
      } else {
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
      }
      ++row;
    }
  }
}

void BeamBatch::valid_actions(std::uint8_t* out) const {
  compute_valid(out, nullptr);
  apply_constraints(out);
}

void BeamBatch::costs(float* out) const {
  if (golds_.empty())
    throw std::logic_error("costs need golds, but this batch was built without them");
  std::vector<std::uint8_t> valid(static_cast<std::size_t>(n_unfinished()) *
                                  static_cast<std::size_t>(n_actions()));
  compute_valid(valid.data(), out);
}

void BeamBatch::advance(const float* scores, std::int64_t n_rows, std::int64_t n_cols) {
  const std::int64_t expected_rows = n_unfinished();
  if (n_cols != n_actions() || n_rows != expected_rows) {
    throw std::invalid_argument("scores must have shape (" + std::to_string(expected_rows) + ", " +
                                std::to_string(n_actions()) + ") for the unfinished states, got (" +
                                std::to_string(n_rows) + ", " + std::to_string(n_cols) + ")");
  }
  if (expected_rows == 0) return;
  const std::int64_t n_cells = n_rows * n_cols;
  if (!all_finite(scores, n_cells)) {
    std::int64_t i = 0;
    while (std::isfinite(scores[i])) ++i;
    throw std::invalid_argument("score at row " + std::to_string(i / n_cols) + ", column " +
                                std::to_string(i % n_cols) + " is " + std::to_string(scores[i]) +
                                "; scores must be finite");
  }
  const std::size_t n_valid_cells = static_cast<std::size_t>(n_cells);
  valid_.resize(n_valid_cells);
  costs_.assign(golds_.empty() ? 0 : n_valid_cells, 0.0f);
  compute_valid(valid_.data(), costs_.empty() ? nullptr : costs_.data());
  if (options_.normalize == Normalize::kLocal) {
    // From here on the beam sees the log-softmaxed scores, exactly as
    // thinc's beam would if it were fed them.
    normalized_.resize(n_valid_cells);
    log_softmax_valid_rows(scores, valid_.data(), n_rows, n_cols, normalized_.data(),
                           softmax_scratch_);
    scores = normalized_.data();
  }
  // Span constraints mask after the normalization: under kLocal a constrained
  // parse keeps its model log-probability (the softmax is over spaCy's valid
  // actions, not the constrained ones).
  if (!constraints_.empty()) {
    apply_constraints(valid_.data());
    infeasible_now_.assign(static_cast<std::size_t>(n_docs()), 0);
  }
  // Every document must keep at least one candidate, or thinc's beam would
  // end up empty; check all before changing anything.
  {
    std::size_t row = 0;
    const auto width = static_cast<std::size_t>(n_actions());
    for (int d = 0; d < n_docs(); ++d) {
      const DocBeam& beam = beams_[static_cast<std::size_t>(d)];
      if (beam.done) continue;
      if (beam.history.size() + static_cast<std::size_t>(options_.width) > kMaxHistoryNodes) {
        throw std::length_error("document " + std::to_string(d) +
                                ": its beam history would exceed " +
                                std::to_string(kMaxHistoryNodes) + " nodes (int32 ids)");
      }
      bool any = false;
      std::int32_t pos = -1;
      for (const Slot& slot : beam.slots) {
        if (slot.done) {
          any = true;
          continue;
        }
        pos = slot.state.pos;
        const std::uint8_t* valid = valid_.data() + row * width;
        const float* r = scores + row * width;
        // A finite score can still overflow the float32 running sum; an
        // infinite beam score would turn the softmax and the ordering into NaN.
        // Checked without branches first (the common case), then located.
        unsigned n_valid = 0;
        unsigned overflows = 0;
        for (std::size_t j = 0; j < width; ++j) {
          n_valid += valid[j];
          overflows |= valid[j] & static_cast<unsigned>(!is_finite(slot.score + r[j]));
        }
        any = any || n_valid > 0;
        for (std::size_t j = 0; overflows != 0 && j < width; ++j) {
          if (valid[j] && !std::isfinite(slot.score + r[j])) {
            throw std::invalid_argument("score at row " + std::to_string(row) + ", column " +
                                        std::to_string(j) + " (" + std::to_string(r[j]) +
                                        ") overflows the beam score " + std::to_string(slot.score) +
                                        " of document " + std::to_string(d) +
                                        "; scores must keep the running sum finite (float32)");
          }
        }
        ++row;
      }
      if (!any && is_constrained(d)) {
        infeasible_now_[static_cast<std::size_t>(d)] = 1;  // no parse meets its constraints
        continue;
      }
      if (!any) {
        throw std::invalid_argument(
            "document " + std::to_string(d) + ": no valid action at token " + std::to_string(pos) +
            (options_.follow_gold ? " that follows the gold annotation"
                                  : "; its preset entities (ent_iob/ent_type) are inconsistent"));
      }
    }
  }
  std::size_t row = 0;
  const auto width = static_cast<std::size_t>(n_actions());
  for (int d = 0; d < n_docs(); ++d) {
    DocBeam& beam = beams_[static_cast<std::size_t>(d)];
    if (beam.done) continue;
    std::size_t n_rows_doc = 0;
    for (const Slot& slot : beam.slots) n_rows_doc += !slot.done;
    if (!infeasible_now_.empty() && infeasible_now_[static_cast<std::size_t>(d)]) {
      beam.slots.clear();
      beam.done = true;
      beam.infeasible = true;
      row += n_rows_doc;
      continue;
    }
    expand(d, scores + row * width, valid_.data() + row * width,
           costs_.empty() ? nullptr : costs_.data() + row * width);
    row += n_rows_doc;
  }
  ++steps_;
}

void BeamBatch::expand(int doc, const float* rows, const std::uint8_t* valid, const float* costs) {
  DocBeam& beam = beams_[static_cast<std::size_t>(doc)];
  const auto n_class = static_cast<std::uint64_t>(n_actions());
  // Beam._fill: one candidate per finished state (with the path-average
  // bonus of TACL '13), one per valid action of the others.
  // Written without branches on validity (every cell is stored, the count
  // advances only for valid ones): the valid pattern is unpredictable.
  candidates_.resize(beam.slots.size() * n_class);
  std::size_t n_candidates = 0;
  row_of_slot_.assign(beam.slots.size(), -1);
  std::int64_t row = 0;
  for (std::size_t i = 0; i < beam.slots.size(); ++i) {
    const Slot& slot = beam.slots[i];
    const std::uint64_t base = i * n_class;
    if (slot.done) {
      const float s = slot.score;
      const float bonus_score = slot.node >= 0 ? s + s / static_cast<float>(beam.t) : s;
      candidates_[n_candidates++] = {bonus_score, base};
      continue;
    }
    row_of_slot_[i] = row;
    const float* r = rows + row * static_cast<std::int64_t>(n_class);
    const std::uint8_t* v = valid + row * static_cast<std::int64_t>(n_class);
    Candidate* out = candidates_.data();
    for (std::uint64_t j = 0; j < n_class; ++j) {
      out[n_candidates] = {slot.score + r[j], base + j};
      n_candidates += v[j] != 0;
    }
    ++row;
  }
  candidates_.resize(n_candidates);
  if (options_.density != 0.0f && !candidates_.empty()) {
    // Softmax over all candidates in double; keep prob >= density / Z.
    double max_ = candidates_[0].score;
    for (const Candidate& c : candidates_) {
      if (c.score > max_) max_ = c.score;
    }
    exps_.resize(candidates_.size());
    double Z = 0.0;
    if (options_.normalize == Normalize::kLocal) {
      // The normalized beam promises thinc's semantics, not libm's last
      // bits: its exps come from the vectorised kernel (within 2 ulp).
      softmax_scratch_.resize(candidates_.size());
      for (std::size_t i = 0; i < candidates_.size(); ++i) {
        softmax_scratch_[i] = candidates_[i].score;
      }
      exp_shifted(softmax_scratch_.data(), static_cast<std::int64_t>(candidates_.size()), max_,
                  exps_.data());
      for (std::size_t i = 0; i < candidates_.size(); ++i) Z += exps_[i];
    } else {
      for (std::size_t i = 0; i < candidates_.size(); ++i) {
        exps_[i] = std::exp(candidates_[i].score - max_);
        Z += exps_[i];
      }
    }
    const double cutoff = (1.0 / Z) * static_cast<double>(options_.density);
    std::size_t kept = 0;
    for (std::size_t i = 0; i < candidates_.size(); ++i) {
      candidates_[kept] = candidates_[i];
      kept += exps_[i] / Z >= cutoff;
    }
    candidates_.resize(kept);
  }
  const std::size_t n_keep = std::min(candidates_.size(), static_cast<std::size_t>(options_.width));
  const auto before = [](const Candidate& a, const Candidate& b) {
    return ranks_before(a.score, a.id, b.score, b.id);
  };
  std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(n_keep),
                    candidates_.end(), before);
  beam.next.clear();
  for (std::size_t k = 0; k < n_keep; ++k) {
    const Candidate& c = candidates_[k];
    const std::size_t p = c.id / n_class;
    const auto clas = static_cast<std::int32_t>(c.id % n_class);
    const Slot& parent = beam.slots[p];
    Slot child = parent;
    child.score = c.score;
    if (!parent.done) {
      system_.apply(child.state, clas);
      if (costs != nullptr) child.loss = parent.loss + costs[row_of_slot_[p] * n_class + clas];
      child.node = static_cast<std::int32_t>(beam.history.size());
      child.hash = extend_hash(parent.hash, clas);
      beam.history.push_back({parent.node, clas, child.hash});
      child.done = child.state.is_final();
    }
    beam.next.push_back(child);
  }
  beam.slots.swap(beam.next);
  beam.t += 1;
  if (options_.compact_history && beam.history.size() >= beam.compact_at) compact_history(beam);
  beam.done =
      std::all_of(beam.slots.begin(), beam.slots.end(), [](const Slot& s) { return s.done; });
}

void BeamBatch::run(Scorer& scorer) {
  if (scorer.n_classes() != n_actions()) {
    throw std::invalid_argument("scorer gives " + std::to_string(scorer.n_classes()) +
                                " classes but the transition table has " +
                                std::to_string(n_actions()));
  }
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

void BeamBatch::compact_history(DocBeam& beam) {
  // Nodes are appended after their parents, so keeping the reachable ones
  // in order keeps every parent id below its children's.
  constexpr std::int32_t kUnreached = -1;
  constexpr std::int32_t kReached = -2;
  new_index_.assign(beam.history.size(), kUnreached);
  for (const Slot& slot : beam.slots) {
    for (std::int32_t node = slot.node;
         node >= 0 && new_index_[static_cast<std::size_t>(node)] == kUnreached;
         node = beam.history[static_cast<std::size_t>(node)].parent) {
      new_index_[static_cast<std::size_t>(node)] = kReached;
    }
  }
  std::size_t kept = 0;
  for (std::size_t i = 0; i < beam.history.size(); ++i) {
    if (new_index_[i] == kUnreached) continue;
    HistoryNode node = beam.history[i];
    if (node.parent >= 0) node.parent = new_index_[static_cast<std::size_t>(node.parent)];
    new_index_[i] = static_cast<std::int32_t>(kept);
    beam.history[kept++] = node;
  }
  beam.history.resize(kept);
  for (Slot& slot : beam.slots) {
    if (slot.node >= 0) slot.node = new_index_[static_cast<std::size_t>(slot.node)];
  }
  // Amortised O(1) per node: the next compaction waits until the history
  // has doubled since this one.
  beam.compact_at = std::max(kMinCompactNodes, 2 * kept);
  beam.history.shrink_to_fit();
}

std::size_t BeamBatch::history_nodes(int doc) const {
  if (doc < 0 || doc >= n_docs()) {
    throw std::out_of_range("document index " + std::to_string(doc) + " out of range for " +
                            std::to_string(n_docs()) + " documents");
  }
  return beams_[static_cast<std::size_t>(doc)].history.size();
}

std::vector<std::int32_t> BeamBatch::history_of(const DocBeam& beam, std::int32_t node) const {
  std::vector<std::int32_t> hist;
  while (node >= 0) {
    const HistoryNode& h = beam.history[static_cast<std::size_t>(node)];
    hist.push_back(h.clas);
    node = h.parent;
  }
  std::reverse(hist.begin(), hist.end());
  return hist;
}

std::vector<Parse> BeamBatch::parses(int doc) const {
  if (doc < 0 || doc >= n_docs()) {
    throw std::out_of_range("document index " + std::to_string(doc) + " out of range for " +
                            std::to_string(n_docs()) + " documents");
  }
  const DocBeam& beam = beams_[static_cast<std::size_t>(doc)];
  if (beam.slots.empty()) return {};  // infeasible span constraints
  std::vector<Parse> out(beam.slots.size());
  // thinc's Beam.probs: softmax over the beam's scores, in double.
  double max_ = beam.slots[0].score;
  for (const Slot& s : beam.slots) max_ = std::max(max_, static_cast<double>(s.score));
  double Z = 0.0;
  for (const Slot& s : beam.slots) Z += std::exp(s.score - max_);
  for (std::size_t i = 0; i < beam.slots.size(); ++i) {
    const Slot& s = beam.slots[i];
    Parse& p = out[i];
    p.score = s.score;
    p.probability = std::exp(s.score - max_) / Z;
    p.loss = s.loss;
    p.history = history_of(beam, s.node);
    p.entities = system_.entities(p.history.data(), p.history.size(), s.state.length);
  }
  return out;
}

void BeamBatch::require_normalized(const char* what) const {
  if (options_.normalize != Normalize::kLocal) {
    throw std::invalid_argument(std::string(what) +
                                " needs normalize='local': with normalize='none' the beam adds "
                                "raw scores, which are not log-probabilities");
  }
}

double BeamBatch::coverage(int doc) const {
  require_normalized("coverage");
  double total = 0.0;
  for (const Parse& p : parses(doc)) total += std::exp(static_cast<double>(p.score));
  return total;
}

std::vector<EntityBounds> BeamBatch::entity_bounds(int doc) const {
  require_normalized("entity bounds");
  const std::vector<Parse> beam = parses(doc);
  double covered = 0.0;
  for (const Parse& p : beam) covered += std::exp(static_cast<double>(p.score));
  // Float32 score sums may put the coverage a rounding error above 1.
  const double missing = std::max(0.0, 1.0 - covered);
  std::vector<std::pair<Entity, std::size_t>> items;  // entity, parse index
  for (std::size_t i = 0; i < beam.size(); ++i) {
    for (const Entity& e : beam[i].entities) items.emplace_back(e, i);
  }
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    const Entity& x = a.first;
    const Entity& y = b.first;
    if (x.start != y.start) return x.start < y.start;
    if (x.end != y.end) return x.end < y.end;
    return x.label < y.label;
  });
  std::vector<EntityBounds> out;
  for (const auto& [entity, i] : items) {
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
  std::vector<std::pair<Entity, double>> items;
  for (const Parse& p : parses(doc)) {
    for (const Entity& e : p.entities) items.emplace_back(e, p.probability);
  }
  // Stable, so each entity's probabilities add up in beam order.
  std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
    const Entity& x = a.first;
    const Entity& y = b.first;
    if (x.start != y.start) return x.start < y.start;
    if (x.end != y.end) return x.end < y.end;
    return x.label < y.label;
  });
  std::vector<std::pair<Entity, double>> merged;
  for (const auto& item : items) {
    if (!merged.empty() && merged.back().first == item.first) {
      merged.back().second += item.second;
    } else {
      merged.push_back(item);
    }
  }
  return merged;
}

// Span constraints: per-document forced and forbidden entity spans, a
// validity mask on top of spaCy's rules.

void BeamBatch::constrain(int doc, const std::vector<SpanConstraint>& spans) {
  if (doc < 0 || doc >= n_docs()) {
    throw std::out_of_range("document index " + std::to_string(doc) + " out of range for " +
                            std::to_string(n_docs()) + " documents");
  }
  if (steps_ > 0) {
    throw std::logic_error("span constraints must be set before the first step (" +
                           std::to_string(steps_) + " taken)");
  }
  const std::int32_t length = docs_.length(doc);
  for (const SpanConstraint& c : spans) {
    if (c.start < 0 || c.end <= c.start || c.end > length) {
      throw std::invalid_argument("document " + std::to_string(doc) + ": constrained span [" +
                                  std::to_string(c.start) + ", " + std::to_string(c.end) +
                                  ") is not a non-empty span of its " + std::to_string(length) +
                                  " tokens");
    }
  }
  if (spans.empty()) return;
  if (constraints_.empty()) constraints_.resize(static_cast<std::size_t>(n_docs()));
  auto& list = constraints_[static_cast<std::size_t>(doc)];
  list.insert(list.end(), spans.begin(), spans.end());
}

bool BeamBatch::is_infeasible(int doc) const {
  if (doc < 0 || doc >= n_docs()) {
    throw std::out_of_range("document index " + std::to_string(doc) + " out of range for " +
                            std::to_string(n_docs()) + " documents");
  }
  return beams_[static_cast<std::size_t>(doc)].infeasible;
}

bool BeamBatch::meets(const State& st, const TokenInfo* tokens, int clas,
                      const SpanConstraint& c) const {
  const Action& a = system_.action(clas);
  const std::int32_t p = st.pos;
  const bool labelled = a.label != 0;
  if (c.forced) {
    // Token start-1 may not open or continue an entity into the span, the
    // span opens at start (U if one token, else B), continues with I and
    // closes with L at end-1.
    if (p == c.start - 1) return a.move != Move::Begin && a.move != Move::In;
    if (p == c.start) {
      return labelled && a.move == (c.end - c.start == 1 ? Move::Unit : Move::Begin);
    }
    if (p > c.start && p < c.end - 1) return a.move == Move::In;
    if (p == c.end - 1) return a.move == Move::Last;
    return true;
  }
  if (c.end - c.start == 1) return !(p == c.start && labelled && a.move == Move::Unit);
  // The forbidden entity [start, end) can only be closed by L at end-1.
  if (p == c.end - 1 && st.ent_start == c.start) return a.move != Move::Last;
  // Entering end-1 with an entity open since start leaves I as the only way
  // on: allowed only if I will be valid there, so no state dead-ends.
  const bool enters_last = p + 1 == c.end - 1 && ((a.move == Move::Begin && p == c.start) ||
                                                  (a.move == Move::In && st.ent_start == c.start));
  if (enters_last) {
    State next = st;
    system_.apply(next, clas);
    const int in = system_.find(Action{Move::In, a.label});
    return in >= 0 && system_.is_valid(next, tokens, in);
  }
  return true;
}

void BeamBatch::apply_constraints(std::uint8_t* valid_out) const {
  if (constraints_.empty()) return;
  std::size_t row = 0;
  const auto width = static_cast<std::size_t>(n_actions());
  for (int d = 0; d < n_docs(); ++d) {
    const DocBeam& beam = beams_[static_cast<std::size_t>(d)];
    if (beam.done) continue;
    const std::vector<SpanConstraint>& list = constraints_[static_cast<std::size_t>(d)];
    for (const Slot& slot : beam.slots) {
      if (slot.done) continue;
      std::uint8_t* valid = valid_out + row * width;
      for (const SpanConstraint& c : list) {
        for (std::size_t j = 0; j < width; ++j) {
          if (valid[j] && !meets(slot.state, docs_.tokens(d), static_cast<int>(j), c)) {
            valid[j] = 0;
          }
        }
      }
      ++row;
    }
  }
}

bool BeamBatch::is_constrained(int doc) const {
  return !constraints_.empty() && !constraints_[static_cast<std::size_t>(doc)].empty();
}

}  // namespace beamner
