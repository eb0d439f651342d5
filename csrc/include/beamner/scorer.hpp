// What the beam knows of the scoring model: given the context tokens of
// the unfinished states, fill their action scores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace beamner {

class Scorer {
 public:
  virtual ~Scorer() = default;
  /// `context` is (n_states, kNumContextFeatures) token ids with batch
  /// offsets, -1 for padding; write (n_states, n_actions) scores, C order.
  virtual void score(const std::int32_t* context, std::int64_t n_states, float* scores) = 0;
  /// Number of score columns the scorer writes.
  virtual int n_classes() const = 0;
};

/// Row-major C = alpha * op(A) * op(B) + beta * C, with the signature of
/// cython-blis' `blis.cy.sgemm` (the GEMM thinc and spaCy use on the CPU).
using SgemmFn = void (*)(int trans_a, int trans_b, int m, int n, int k, float alpha, const float* a,
                         int lda, const float* b, int ldb, float beta, float* c, int ldc);

/// The lower layer of spaCy's TransitionBasedParser, precomputed for every
/// token of the batch, and the upper layer's weights. All borrowed, C order,
/// float32; the caller keeps them alive while the scorer is used.
struct PrecomputedModel {
  /// (n_rows, nF, nO, nP): row 0 is the padding vector, token t of the batch is row t + 1.
  const float* features = nullptr;
  std::int64_t n_rows = 0;
  int nF = 0;
  int nO = 0;
  int nP = 0;
  /// (nO, nP)
  const float* lower_bias = nullptr;
  /// (n_classes, nO), or null for `use_upper = false` (then n_classes == nO).
  const float* upper_W = nullptr;
  /// (n_classes), null exactly when upper_W is.
  const float* upper_b = nullptr;
  /// (n_classes): 0 marks a class unseen in training; null means all seen.
  const float* class_mask = nullptr;
  int n_classes = 0;
  /// GEMM for the upper layer; null uses the CBLAS beamner was built with.
  /// Passing blis' sgemm reproduces spaCy's scores bit for bit.
  SgemmFn sgemm = nullptr;
};

/// Scores states as spaCy's ParserStepModel does: sum the precomputed
/// feature rows, add the bias, maxout (nP > 1) or ReLU (nP == 1), the upper
/// layer through BLAS (or a kernel giving the same bits, see gemm_name), then
/// give unseen classes the batch's minimum score.
class PrecomputedScorer final : public Scorer {
 public:
  /// Throws std::invalid_argument naming the first inconsistent size.
  explicit PrecomputedScorer(const PrecomputedModel& model);
  void score(const std::int32_t* context, std::int64_t n_states, float* scores) override;
  int n_classes() const override { return model_.n_classes; }
  /// The upper layer's GEMM: "blis" (model.sgemm), "cblas", "none" without an
  /// upper layer, or "sequential-<isa>": beamner's own kernel, used instead of
  /// model.sgemm where a probe with the real weights gave its result bit for bit.
  const char* gemm_name() const { return gemm_name_.c_str(); }

 private:
  using PackedGemmFn = void (*)(const float* a, std::int64_t m, const float* packed_b, int n, int k,
                                const float* bias, float* c);

  PrecomputedModel model_;
  /// Set when the sequential kernel replaces model_.sgemm; it reads packed_upper_W_.
  PackedGemmFn packed_gemm_ = nullptr;
  std::vector<float> packed_upper_W_;
  std::string gemm_name_ = "none";
  /// One state's summed features before the maxout.
  std::vector<float> unmaxed_;
  std::vector<float> hidden_;
};

}  // namespace beamner
