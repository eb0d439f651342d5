// spaCy's ParserStepModel forward (spacy/ml/parser_model.pyx: step_forward,
// precompute_hiddens.begin_update, sum_state_features) in one native pass.
// The feature sum runs in spaCy's order (features 0..nF-1 into zeros, then
// the bias) so hidden activations match it bit for bit.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

#include "beamner/scorer.hpp"
#include "beamner/types.hpp"

namespace beamner {

PrecomputedScorer::PrecomputedScorer(const PrecomputedModel& model) : model_(model) {
  const auto require = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("precomputed model: " + what);
  };
  require(model.features != nullptr, "features are missing");
  require(model.n_rows >= 1,
          "features need at least the padding row, got " + std::to_string(model.n_rows) + " rows");
  require(model.nF == kNumContextFeatures, "nF must be " + std::to_string(kNumContextFeatures) +
                                               " (spaCy's NER features), got " +
                                               std::to_string(model.nF));
  require(model.nO >= 1, "nO must be >= 1, got " + std::to_string(model.nO));
  require(model.nP >= 1, "nP must be >= 1, got " + std::to_string(model.nP));
  require(model.lower_bias != nullptr, "lower bias is missing");
  require((model.upper_W == nullptr) == (model.upper_b == nullptr),
          "upper W and b must be given together");
  require(model.n_classes >= 1, "n_classes must be >= 1, got " + std::to_string(model.n_classes));
  require(model.n_rows <= std::int64_t{INT32_MAX}, "too many feature rows for 32-bit token ids");
  if (model.upper_W == nullptr) {
    require(model.n_classes == model.nO, "without an upper layer n_classes (" +
                                             std::to_string(model.n_classes) + ") must equal nO (" +
                                             std::to_string(model.nO) + ")");
  }
}

void PrecomputedScorer::score(const std::int32_t* context, std::int64_t n_states, float* scores) {
  const std::int64_t nF = model_.nF;
  const std::int64_t nO = model_.nO;
  const std::int64_t nP = model_.nP;
  const std::int64_t nC = model_.n_classes;
  const std::int64_t piece_width = nO * nP;
  const std::int64_t max_token = model_.n_rows - 2;
  unmaxed_.assign(static_cast<std::size_t>(n_states * piece_width), 0.0f);
  for (std::int64_t b = 0; b < n_states; ++b) {
    float* out = unmaxed_.data() + b * piece_width;
    for (std::int64_t f = 0; f < nF; ++f) {
      const std::int32_t token = context[b * nF + f];
      if (token > max_token || token < -1) {
        throw std::out_of_range("context token " + std::to_string(token) +
                                " is outside the precomputed features (" +
                                std::to_string(model_.n_rows - 1) + " tokens)");
      }
      const float* feature = model_.features + ((token + 1) * nF + f) * piece_width;
      for (std::int64_t i = 0; i < piece_width; ++i) out[i] += feature[i];
    }
    for (std::int64_t i = 0; i < piece_width; ++i) out[i] += model_.lower_bias[i];
  }
  float* hidden = model_.upper_W == nullptr ? scores : nullptr;
  if (hidden == nullptr) {
    hidden_.resize(static_cast<std::size_t>(n_states * nO));
    hidden = hidden_.data();
  }
  for (std::int64_t b = 0; b < n_states; ++b) {
    const float* in = unmaxed_.data() + b * piece_width;
    float* out = hidden + b * nO;
    if (nP > 1) {
      // thinc's maxout: the first of equal maxima wins.
      for (std::int64_t o = 0; o < nO; ++o) {
        const float* pieces = in + o * nP;
        float best = pieces[0];
        for (std::int64_t p = 1; p < nP; ++p) {
          if (pieces[p] > best) best = pieces[p];
        }
        out[o] = best;
      }
    } else {
      // spaCy multiplies by the mask (x >= 0), so negatives become -0.0.
      for (std::int64_t o = 0; o < nO; ++o) out[o] = in[o] * (in[o] >= 0.0f ? 1.0f : 0.0f);
    }
  }
  if (model_.upper_W != nullptr && n_states > 0) {
    const int m = static_cast<int>(n_states);
    const int n = static_cast<int>(nC);
    const int k = static_cast<int>(nO);
    if (model_.sgemm != nullptr) {
      model_.sgemm(0, 1, m, n, k, 1.0f, hidden, k, model_.upper_W, k, 0.0f, scores, n);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, hidden, k, model_.upper_W,
                  k, 0.0f, scores, n);
    }
    for (std::int64_t b = 0; b < n_states; ++b) {
      float* row = scores + b * nC;
      for (std::int64_t c = 0; c < nC; ++c) row[c] += model_.upper_b[c];
    }
  }
  if (model_.class_mask != nullptr && n_states > 0) {
    bool any_unseen = false;
    for (std::int64_t c = 0; c < nC; ++c) any_unseen = any_unseen || model_.class_mask[c] == 0.0f;
    if (any_unseen) {
      // numpy.nanmin over the whole step's matrix, as spaCy's step_forward.
      float min_ = std::numeric_limits<float>::quiet_NaN();
      for (std::int64_t i = 0; i < n_states * nC; ++i) {
        if (!std::isnan(scores[i]) && (std::isnan(min_) || scores[i] < min_)) min_ = scores[i];
      }
      for (std::int64_t b = 0; b < n_states; ++b) {
        for (std::int64_t c = 0; c < nC; ++c) {
          if (model_.class_mask[c] == 0.0f) scores[b * nC + c] = min_;
        }
      }
    }
  }
}

}  // namespace beamner
