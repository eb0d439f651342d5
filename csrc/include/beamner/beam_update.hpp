// Global (beam) training updates, as spaCy's `update_beam`
// (spacy/pipeline/_parser_internals/_beam_utils.pyx) with thinc's
// MaxViolation.check_crf: a predicted beam and a gold-constrained beam
// advance together on the scores of their unique states; at the step of
// maximum violation the CRF-style loss compares the beam's wrong parses
// with its gold ones, and its gradient lands on every action of their
// histories.
#pragma once

#include <cstdint>
#include <vector>

#include "beamner/beam.hpp"

namespace beamner {

class BeamUpdate {
 public:
  /// Throws std::invalid_argument on golds that do not match the documents.
  BeamUpdate(const TransitionSystem& system, const DocBatch& docs, std::vector<Gold> golds,
             int width, float density);

  bool is_done() const { return pred_.is_done() && gold_.is_done(); }
  int n_actions() const { return pred_.n_actions(); }

  /// Collect this step's unique unfinished states of both beams (the
  /// predicted beam's first); returns how many score rows `advance` needs.
  std::int64_t prepare_step();
  /// (n_rows, 3) context token ids of the prepared rows.
  void context_tokens(std::int32_t* out) const;
  /// Advance both beams with the prepared rows' scores, then track the
  /// maximum violation of every document.
  void advance(const float* scores, std::int64_t n_rows, std::int64_t n_cols);

  /// Steps whose scores get a gradient (spaCy's max(nr_steps)).
  int n_gradient_steps() const;
  /// Rows of step `step` (as prepared then).
  std::int64_t n_rows(int step) const;
  /// d_loss/d_scores of step `step`: (n_rows(step), n_actions), C order.
  void gradient(int step, float* out) const;

 private:
  enum Side : std::uint8_t { kPred = 0, kGold = 1 };
  struct Ref {
    Side side;
    std::int32_t node;
  };
  struct NodeRow {
    std::int32_t node;
    std::int64_t row;
  };
  struct StepMap {
    std::int64_t n_rows = 0;
    // Per document: the rows of predicted and gold states by history node.
    std::vector<std::vector<NodeRow>> pred, gold;
  };
  struct Violation {
    float cost = 0.0f;
    float delta = -1.0f;
    std::vector<Ref> histories;  // predicted (wrong) first, then gold
    std::vector<double> d_loss;  // per history, times the cost
  };

  const BeamBatch& beam(Side side) const { return side == kPred ? pred_ : gold_; }
  bool same_history(Side a, std::int32_t node_a, Side b, std::int32_t node_b, int doc) const;
  void check_crf(int doc);
  std::int64_t row_of(int step, int doc, Side side, std::int32_t node) const;

  BeamBatch pred_;
  BeamBatch gold_;
  std::vector<StepMap> steps_;
  std::vector<std::int32_t> context_;
  std::vector<std::int64_t> pred_rows_, gold_rows_;
  std::vector<Violation> violations_;
  std::vector<bool> finished_;
  std::vector<float> gathered_;
};

}  // namespace beamner
