#include "beamner/normalization.hpp"

#include <stdexcept>

#include "log_softmax.hpp"

namespace beamner {

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

void LocalNormalization::apply(Step& step) {
  // From here on the beam sees the log-softmaxed scores, exactly as thinc's
  // beam would if it were fed them.
  normalized_.resize(static_cast<std::size_t>(step.n_rows * step.n_cols));
  log_softmax_valid_rows(step.scores, step.valid, step.n_rows, step.n_cols, normalized_.data(),
                         scratch_);
  step.scores = normalized_.data();
}

}  // namespace beamner
