// The BILUO transition system with spaCy 3.8's validity rules and
// dynamic-oracle costs (BiluoPushDown in spacy/pipeline/_parser_internals/ner.pyx).
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "beamner/doc.hpp"
#include "beamner/state.hpp"
#include "beamner/types.hpp"

namespace beamner {

class TransitionSystem {
 public:
  /// An action table in class order, e.g. read from a spaCy `ner.moves`.
  /// Throws std::invalid_argument for an empty table, a Missing move, an
  /// O with a label, a labelled move other than U with label 0, or a duplicate.
  explicit TransitionSystem(std::vector<Action> actions);

  /// A table for the given entity labels: B-, I-, L-, U- of every label (in
  /// the order given), then U with label 0 (blocked tokens), then O. spaCy
  /// sorts labels by (frequency, name) descending; pass them in that order
  /// to reproduce a freshly initialised spaCy table.
  static TransitionSystem from_labels(const std::vector<label_t>& labels);

  int n_actions() const { return static_cast<int>(actions_.size()); }
  const Action& action(int clas) const { return actions_[static_cast<std::size_t>(clas)]; }
  const std::vector<Action>& actions() const { return actions_; }
  /// Class index of an action, -1 if the table lacks it.
  int find(const Action& action) const;

  /// `tokens` points at the state's document (token 0).
  bool is_valid(const State& state, const TokenInfo* tokens, int clas) const;
  void set_valid(const State& state, const TokenInfo* tokens, std::uint8_t* is_valid) const;
  void apply(State& state, int clas) const;

  /// spaCy's `get_cost` for a valid action (no validity check).
  float cost(const State& state, const Gold& gold, int clas) const;
  /// spaCy's `set_costs`: validity, then cost of valid actions, 9000 for the rest.
  void set_costs(const State& state, const TokenInfo* tokens, const Gold& gold,
                 std::uint8_t* is_valid, float* costs) const;

  /// Entities of a finished (or partial) action history, as spaCy's
  /// `get_beam_parses` lists them (closed entities only, in opening order).
  std::vector<Entity> entities(const std::int32_t* history, std::size_t n,
                               std::int32_t length) const;

 private:
  /// Class of (move, label), -1 if the table lacks it.
  int class_of(Move move, label_t label) const;

  std::vector<Action> actions_;
  // Lookups behind set_valid, which decides a row move by move.
  std::array<std::vector<std::uint8_t>, kNumMoves>
      labelled_;                             ///< Per move: 1 for its labelled classes.
  std::array<int, kNumMoves> unlabelled_{};  ///< Per move: class with label 0, or -1.
  std::vector<std::pair<label_t, std::array<int, kNumMoves>>> by_label_;  ///< Sorted by label.
};

}  // namespace beamner
