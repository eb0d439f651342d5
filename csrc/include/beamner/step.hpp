// One beam step's score matrix as step transforms see it (in the spirit of
// CTranslate2's logits processors): after the transition system's validity,
// before the beam expands the states. A transform may replace the scores
// (normalization.hpp) or clear validity cells (span_constraints.hpp), never
// set them.
#pragma once

#include <cstdint>

#include "beamner/doc.hpp"
#include "beamner/state.hpp"
#include "beamner/transition_system.hpp"

namespace beamner {

/// The unfinished state a score row belongs to.
struct StepRow {
  int doc;
  const State* state;
};

struct Step {
  const float* scores = nullptr;  ///< (n_rows, n_cols), C order; null when only validity is asked.
  std::uint8_t* valid = nullptr;  ///< (n_rows, n_cols), 0/1.
  std::int64_t n_rows = 0;
  std::int64_t n_cols = 0;
  /// n_rows of them, for transforms that look at the states; may be null otherwise.
  const StepRow* rows = nullptr;
  const TransitionSystem* system = nullptr;
  const DocBatch* docs = nullptr;
};

}  // namespace beamner
