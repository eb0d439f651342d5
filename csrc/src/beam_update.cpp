// Ported line by line from spaCy's `update_beam`, `get_unique_states` and
// `get_gradient` and thinc's `MaxViolation.check_crf`, keeping their orders
// of iteration and their float32/double arithmetic.
#include "beamner/beam_update.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "check.hpp"

namespace beamner {
namespace {

// thinc's _softmax over Python floats (doubles), summed left to right.
std::vector<double> softmax(const std::vector<double>& xs) {
  std::vector<double> out(xs.size());
  if (xs.empty()) return out;
  const double max_ = *std::max_element(xs.begin(), xs.end());
  double Z = 0.0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    out[i] = std::exp(xs[i] - max_);
    Z += out[i];
  }
  for (double& x : out) x /= Z;
  return out;
}

}  // namespace

BeamUpdate::BeamUpdate(const TransitionSystem& system, const DocBatch& docs,
                       std::vector<Gold> golds, int width, float density)
    : pred_(system, docs, BeamOptions{width, density, false, false}, golds),
      gold_(system, docs, BeamOptions{width, 0.0f, true, false}, std::move(golds)),
      violations_(static_cast<std::size_t>(docs.n_docs())),
      finished_(static_cast<std::size_t>(docs.n_docs()), false) {
  BEAMNER_THROW_IF(!pred_.has_golds() && docs.n_docs() > 0, std::invalid_argument,
                   "a beam update needs one gold per document");
}

bool BeamUpdate::same_history(Side a, std::int32_t node_a, Side b, std::int32_t node_b,
                              int doc) const {
  const History& ha = beam(a).beam(doc).history();
  const History& hb = beam(b).beam(doc).history();
  while (node_a >= 0 && node_b >= 0) {
    const HistoryNode& x = ha[node_a];
    const HistoryNode& y = hb[node_b];
    if (x.hash != y.hash || x.clas != y.clas) return false;
    node_a = x.parent;
    node_b = y.parent;
  }
  return node_a < 0 && node_b < 0;
}

std::int64_t BeamUpdate::prepare_step() {
  StepMap step;
  step.pred.resize(violations_.size());
  step.gold.resize(violations_.size());
  context_.clear();
  pred_rows_.clear();
  gold_rows_.clear();
  std::int64_t n_rows = 0;
  const auto add_row = [&](const BeamBatch& b, int doc, const Beam<State>::Slot& slot) {
    std::int32_t ids[kNumContextFeatures];
    slot.state.context_tokens(ids, b.docs().offset(doc));
    context_.insert(context_.end(), ids, ids + kNumContextFeatures);
    return n_rows++;
  };
  for (int d = 0; d < pred_.n_docs(); ++d) {
    const Beam<State>& pbeam = pred_.beam(d);
    const Beam<State>& gbeam = gold_.beam(d);
    if (!pred_.is_done()) {
      for (const auto& slot : pbeam.slots()) {
        if (slot.done) continue;
        const std::int64_t row = add_row(pred_, d, slot);
        pred_rows_.push_back(row);
        step.pred[static_cast<std::size_t>(d)].push_back({slot.node, row});
      }
    }
    if (!gold_.is_done()) {
      for (const auto& slot : gbeam.slots()) {
        if (slot.done) continue;
        std::int64_t row = -1;
        for (const NodeRow& p : step.pred[static_cast<std::size_t>(d)]) {
          const std::uint64_t pslot_hash = p.node < 0 ? 0 : pbeam.history()[p.node].hash;
          if (pslot_hash == slot.hash && same_history(kPred, p.node, kGold, slot.node, d)) {
            row = p.row;
            break;
          }
        }
        if (row < 0) row = add_row(gold_, d, slot);
        gold_rows_.push_back(row);
        step.gold[static_cast<std::size_t>(d)].push_back({slot.node, row});
      }
    }
  }
  step.n_rows = n_rows;
  steps_.push_back(std::move(step));
  return n_rows;
}

void BeamUpdate::context_tokens(std::int32_t* out) const {
  std::copy(context_.begin(), context_.end(), out);
}

void BeamUpdate::advance(const float* scores, std::int64_t n_rows, std::int64_t n_cols) {
  BEAMNER_THROW_IF(steps_.empty() || n_rows != steps_.back().n_rows || n_cols != pred_.n_actions(),
                   std::invalid_argument, "scores must have shape (",
                   steps_.empty() ? std::int64_t{0} : steps_.back().n_rows, ", ", pred_.n_actions(),
                   ") for the prepared rows, got (", n_rows, ", ", n_cols, ")");
  const auto gather = [&](const std::vector<std::int64_t>& rows) {
    gathered_.resize(rows.size() * static_cast<std::size_t>(n_cols));
    for (std::size_t r = 0; r < rows.size(); ++r) {
      std::copy(
          scores + rows[r] * n_cols, scores + (rows[r] + 1) * n_cols,
          gathered_.begin() + static_cast<std::ptrdiff_t>(r * static_cast<std::size_t>(n_cols)));
    }
  };
  if (!pred_.is_done()) {
    gather(pred_rows_);
    pred_.advance(gathered_.data(), static_cast<std::int64_t>(pred_rows_.size()), n_cols);
  }
  if (!gold_.is_done()) {
    gather(gold_rows_);
    gold_.advance(gathered_.data(), static_cast<std::int64_t>(gold_rows_.size()), n_cols);
  }
  for (int d = 0; d < pred_.n_docs(); ++d) {
    if (finished_[static_cast<std::size_t>(d)]) continue;
    check_crf(d);
    if (pred_.beam(d).is_done() && gold_.beam(d).is_done()) {
      finished_[static_cast<std::size_t>(d)] = true;
    }
  }
}

void BeamUpdate::check_crf(int doc) {
  const auto& pbeam = pred_.beam(doc).slots();
  const auto& gbeam = gold_.beam(doc).slots();
  Violation& v = violations_[static_cast<std::size_t>(doc)];
  const float pred_loss = pbeam[0].loss;
  const double d = static_cast<double>(pbeam[0].score) - gbeam[0].score;
  if (!(pred_loss > 0.0f && (v.cost == 0.0f || d > static_cast<double>(v.delta)))) return;
  std::vector<Ref> p_hist, g_hist;
  std::vector<double> p_scores, g_scores;
  for (const auto& slot : pbeam) {
    if (slot.loss > 0.0f) {
      p_scores.push_back(slot.score);
      p_hist.push_back({kPred, slot.node});
    } else {
      // A gold analysis the predicted beam found on its own (non-monotonic moves).
      bool seen = false;
      for (const auto& g : gbeam) {
        if (g.hash == slot.hash && same_history(kPred, slot.node, kGold, g.node, doc)) {
          seen = true;
          break;
        }
      }
      if (!seen) {
        g_scores.push_back(slot.score);
        g_hist.push_back({kPred, slot.node});
      }
    }
  }
  for (const auto& slot : gbeam) {
    if (slot.loss == 0.0f) {
      g_scores.push_back(slot.score);
      g_hist.push_back({kGold, slot.node});
    }
  }
  std::vector<double> all = p_scores;
  all.insert(all.end(), g_scores.begin(), g_scores.end());
  const std::vector<double> all_probs = softmax(all);
  const std::vector<double> g_probs = softmax(g_scores);
  v.cost = pred_loss;
  v.delta = static_cast<float>(d);
  v.histories = p_hist;
  v.histories.insert(v.histories.end(), g_hist.begin(), g_hist.end());
  // update_beam: d_loss = [d_l * violn.cost for d_l in p_probs + g_probs]
  v.d_loss.clear();
  const double cost = v.cost;
  for (std::size_t i = 0; i < p_scores.size(); ++i) v.d_loss.push_back(all_probs[i] * cost);
  for (std::size_t i = 0; i < g_scores.size(); ++i) {
    v.d_loss.push_back((all_probs[p_scores.size() + i] - g_probs[i]) * cost);
  }
}

int BeamUpdate::n_gradient_steps() const {
  int n = 0;
  for (std::size_t d = 0; d < violations_.size(); ++d) {
    const Violation& v = violations_[d];
    for (std::size_t h = 0; h < v.histories.size(); ++h) {
      if (v.d_loss[h] == 0.0) continue;
      const Ref& ref = v.histories[h];
      const History& history = beam(ref.side).beam(static_cast<int>(d)).history();
      int length = 0;
      for (std::int32_t node = ref.node; node >= 0; node = history[node].parent) {
        ++length;
      }
      n = std::max(n, length);
    }
  }
  return n;
}

std::int64_t BeamUpdate::n_rows(int step) const {
  BEAMNER_THROW_IF(step < 0 || step >= static_cast<int>(steps_.size()), std::out_of_range, "step ",
                   step, " out of range for ", steps_.size(), " steps");
  return steps_[static_cast<std::size_t>(step)].n_rows;
}

std::int64_t BeamUpdate::row_of(int step, int doc, Side side, std::int32_t node) const {
  const StepMap& map = steps_[static_cast<std::size_t>(step)];
  const auto& rows = (side == kPred ? map.pred : map.gold)[static_cast<std::size_t>(doc)];
  for (const NodeRow& nr : rows) {
    if (nr.node == node) return nr.row;
  }
  // spaCy's beam_map is keyed by history: a gold-beam state merged into a
  // predicted row is found under the predicted beam's node.
  if (side == kGold) {
    for (const NodeRow& nr : map.pred[static_cast<std::size_t>(doc)]) {
      if (same_history(kPred, nr.node, kGold, node, doc)) return nr.row;
    }
  } else {
    for (const NodeRow& nr : map.gold[static_cast<std::size_t>(doc)]) {
      if (same_history(kGold, nr.node, kPred, node, doc)) return nr.row;
    }
  }
  throw std::logic_error("history prefix of document " + std::to_string(doc) +
                         " has no row at step " + std::to_string(step));
}

void BeamUpdate::gradient(int step, float* out) const {
  const std::int64_t rows = n_rows(step);
  const auto n_class = static_cast<std::int64_t>(pred_.n_actions());
  std::fill(out, out + rows * n_class, 0.0f);
  const int n_steps_total = n_gradient_steps();
  if (step >= n_steps_total) return;
  for (std::size_t d = 0; d < violations_.size(); ++d) {
    const Violation& v = violations_[d];
    // nr_steps of this document: the longest history with a non-zero loss.
    std::vector<std::vector<std::int32_t>> chains(v.histories.size());
    int nr_steps = 0;
    for (std::size_t h = 0; h < v.histories.size(); ++h) {
      const History& history = beam(v.histories[h].side).beam(static_cast<int>(d)).history();
      for (std::int32_t node = v.histories[h].node; node >= 0; node = history[node].parent) {
        chains[h].push_back(node);
      }
      std::reverse(chains[h].begin(), chains[h].end());
      if (v.d_loss[h] != 0.0) nr_steps = std::max(nr_steps, static_cast<int>(chains[h].size()));
    }
    for (std::size_t h = 0; h < v.histories.size(); ++h) {
      double loss = v.d_loss[h];
      if (loss == 0.0) continue;
      const auto len = static_cast<double>(chains[h].size());
      const double avg_loss = loss / len;
      loss += avg_loss * (nr_steps - len);
      if (step >= static_cast<int>(chains[h].size())) continue;
      const Side side = v.histories[h].side;
      const std::int32_t prefix = step == 0 ? -1 : chains[h][static_cast<std::size_t>(step - 1)];
      const std::int64_t row = row_of(step, static_cast<int>(d), side, prefix);
      const History& history = beam(side).beam(static_cast<int>(d)).history();
      const std::int32_t clas = history[chains[h][static_cast<std::size_t>(step)]].clas;
      // numpy: float32 cell += Python float -> float32 arithmetic (NEP 50).
      float& cell = out[row * n_class + clas];
      cell = cell + static_cast<float>(loss);
    }
  }
}

}  // namespace beamner
