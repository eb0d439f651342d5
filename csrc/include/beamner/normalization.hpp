// Local normalization as a step transform: each state's scores become a
// log-softmax over its valid actions, so a parse's beam score is the model's
// sequence log-probability.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "beamner/step.hpp"

namespace beamner {

/// What the beam adds up as a step's scores.
enum class Normalize : std::uint8_t {
  /// The model's raw scores, as thinc's beam adds them (spaCy's behaviour).
  kNone = 0,
  /// Each state's scores as a log-softmax over its valid actions (double
  /// log-sum-exp, then float32), so a parse's score is the model's sequence
  /// log-probability. Density, ordering and tie-breaking work on these.
  kLocal = 1,
};

/// "none" or "local".
const char* normalize_name(Normalize normalize);
/// Parses "none" / "local"; throws std::invalid_argument naming the choices.
Normalize parse_normalize(const std::string& name);

/// Normalize::kLocal's transform: replaces step.scores by a buffer it owns
/// (valid until its next apply) holding each row's log-softmax over its
/// valid cells.
class LocalNormalization {
 public:
  void apply(Step& step);

 private:
  std::vector<float> normalized_;
  std::vector<float> scratch_;
};

}  // namespace beamner
