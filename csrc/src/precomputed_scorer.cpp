// spaCy's ParserStepModel forward (spacy/ml/parser_model.pyx: step_forward,
// precompute_hiddens.begin_update, sum_state_features) in one native pass.
// The feature sum runs in spaCy's order (features 0..nF-1 into zeros, then
// the bias) so hidden activations match it bit for bit.
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "beamner/scorer.hpp"
#include "beamner/types.hpp"
#include "check.hpp"
#include "sequential_gemm.hpp"

namespace beamner {

namespace {

// Stand-in hidden activations for the GEMM probe: deterministic, both signs,
// magnitudes 2^-12..2^12 and some zeros, so that another rounding (an FMA,
// another summation order) shows in some output.
std::vector<float> probe_activations(int rows, int k) {
  std::vector<float> out(static_cast<std::size_t>(rows) * static_cast<std::size_t>(k));
  std::uint32_t state = 0x9E3779B9u;
  for (float& x : out) {
    state ^= state << 13;  // xorshift32
    state ^= state >> 17;
    state ^= state << 5;
    if (state % 8 == 0) {
      x = 0.0f;
      continue;
    }
    const float mantissa = 1.0f + static_cast<float>(state >> 16) / 65536.0f;
    const int exponent = static_cast<int>((state >> 4) % 25) - 12;
    x = std::ldexp((state & 8) != 0 ? -mantissa : mantissa, exponent);
  }
  return out;
}

}  // namespace

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
    return;
  }
  if (model.sgemm == nullptr) {
    gemm_name_ = "cblas";
    return;
  }
  gemm_name_ = "blis";
  // blis' result is the reference, and the sequential kernel matches it only
  // where blis runs its reference microkernel (on CPUs it recognises it uses
  // FMA kernels) and k fits one k-block: compare both on the real weights.
  constexpr int kProbeRows = 8;
  const int n = model.n_classes;
  const int k = model.nO;
  const std::vector<float> probe = probe_activations(kProbeRows, k);
  std::vector<float> expected(static_cast<std::size_t>(kProbeRows) * static_cast<std::size_t>(n));
  std::vector<float> got(expected.size());
  model.sgemm(0, 1, kProbeRows, n, k, 1.0f, probe.data(), k, model.upper_W, k, 0.0f,
              expected.data(), n);
  const GemmLevel level = supported_gemm_levels().back();
  std::vector<float> packed = pack_gemm_rhs(model.upper_W, n, k);
  const SequentialGemmFn kernel = sequential_gemm(level);
  kernel(probe.data(), kProbeRows, packed.data(), n, k, nullptr, got.data());
  if (std::memcmp(expected.data(), got.data(), expected.size() * sizeof(float)) == 0) {
    packed_gemm_ = kernel;
    packed_upper_W_ = std::move(packed);
    gemm_name_ = std::string("sequential-") + gemm_level_name(level);
  }
}

void PrecomputedScorer::score(const std::int32_t* context, std::int64_t n_states, float* scores) {
  constexpr std::int64_t nF = kNumContextFeatures;  // the constructor checked model_.nF
  const std::int64_t nO = model_.nO;
  const std::int64_t nP = model_.nP;
  const std::int64_t nC = model_.n_classes;
  const std::int64_t piece_width = nO * nP;
  const std::int64_t max_token = model_.n_rows - 2;
  float* hidden = scores;
  if (model_.upper_W != nullptr) {
    hidden_.resize(static_cast<std::size_t>(n_states * nO));
    hidden = hidden_.data();
  }
  unmaxed_.resize(static_cast<std::size_t>(piece_width));
  float* unmaxed = unmaxed_.data();
  const float* lower_bias = model_.lower_bias;
  for (std::int64_t b = 0; b < n_states; ++b) {
    const float* feature[nF];
    for (std::int64_t f = 0; f < nF; ++f) {
      const std::int32_t token = context[b * nF + f];
      BEAMNER_THROW_IF(token > max_token || token < -1, std::out_of_range, "context token ", token,
                       " is outside the precomputed features (", model_.n_rows - 1, " tokens)");
      feature[f] = model_.features + ((token + 1) * nF + f) * piece_width;
    }
    // One state at a time, in spaCy's order: the features into zeros (so
    // -0.0 sums as there), then the bias.
    for (std::int64_t i = 0; i < piece_width; ++i) {
      float sum = 0.0f;
      for (std::int64_t f = 0; f < nF; ++f) sum += feature[f][i];
      unmaxed[i] = sum + lower_bias[i];
    }
    float* out = hidden + b * nO;
    if (nP == 2) {
      // spaCy's default maxout_pieces, spelled out so that it vectorises.
      for (std::int64_t o = 0; o < nO; ++o) {
        const float first = unmaxed[2 * o];
        const float second = unmaxed[2 * o + 1];
        out[o] = second > first ? second : first;
      }
    } else if (nP > 1) {
      // thinc's maxout: the first of equal maxima wins.
      for (std::int64_t o = 0; o < nO; ++o) {
        const float* pieces = unmaxed + o * nP;
        float best = pieces[0];
        for (std::int64_t p = 1; p < nP; ++p) {
          if (pieces[p] > best) best = pieces[p];
        }
        out[o] = best;
      }
    } else {
      // spaCy multiplies by the mask (x >= 0), so negatives become -0.0.
      for (std::int64_t o = 0; o < nO; ++o) {
        out[o] = unmaxed[o] * (unmaxed[o] >= 0.0f ? 1.0f : 0.0f);
      }
    }
  }
  if (model_.upper_W != nullptr && n_states > 0) {
    const int m = static_cast<int>(n_states);
    const int n = static_cast<int>(nC);
    const int k = static_cast<int>(nO);
    if (packed_gemm_ != nullptr) {
      packed_gemm_(hidden, n_states, packed_upper_W_.data(), n, k, model_.upper_b, scores);
    } else {
      if (model_.sgemm != nullptr) {
        model_.sgemm(0, 1, m, n, k, 1.0f, hidden, k, model_.upper_W, k, 0.0f, scores, n);
      } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, hidden, k,
                    model_.upper_W, k, 0.0f, scores, n);
      }
      for (std::int64_t b = 0; b < n_states; ++b) {
        float* row = scores + b * nC;
        for (std::int64_t c = 0; c < nC; ++c) row[c] += model_.upper_b[c];
      }
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
