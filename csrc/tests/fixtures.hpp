// Shared fixtures of the Catch2 tests: labels, documents, and the one stub
// scorer standing in for the neural model.
#pragma once

#include <cstdint>
#include <vector>

#include "beamner/doc.hpp"
#include "beamner/scorer.hpp"
#include "beamner/types.hpp"

namespace beamner::testing {

constexpr label_t PER = 11;
constexpr label_t LOC = 22;

/// Documents of the given lengths, every token plain (no presets).
inline DocBatch docs_of(const std::vector<int>& lengths) {
  int total = 0;
  for (int n : lengths) total += n;
  return DocBatch(std::vector<TokenInfo>(static_cast<std::size_t>(total)),
                  std::vector<std::int32_t>(lengths.begin(), lengths.end()));
}

/// Deterministic scores that depend on the context tokens only, as a real
/// scorer's would, spread like a model's (uniform in [-4, 4), several units
/// apart); `seed` gives another model.
class StubScorer final : public Scorer {
 public:
  explicit StubScorer(int n_classes, unsigned seed = 0) : n_classes_(n_classes), seed_(seed) {}
  void score(const std::int32_t* context, std::int64_t n_states, float* scores) override {
    ++calls;
    for (std::int64_t i = 0; i < n_states; ++i) {
      row(context + i * kNumContextFeatures, scores + i * n_classes_);
    }
  }
  /// One state's scores from its context token ids.
  void row(const std::int32_t* c, float* out) const {
    for (int j = 0; j < n_classes_; ++j) {
      std::uint64_t h = seed_ * 0x9e3779b97f4a7c15ULL;
      for (int f = 0; f < kNumContextFeatures; ++f) {
        h = (h ^ static_cast<unsigned>(c[f] + 2)) * 0x100000001b3ULL;
      }
      h = (h ^ static_cast<unsigned>(j)) * 0xff51afd7ed558ccdULL;
      h ^= h >> 33;
      out[j] = static_cast<float>(static_cast<double>(h % 100000) / 100000.0 * 8.0 - 4.0);
    }
  }
  int n_classes() const override { return n_classes_; }
  int calls = 0;  ///< score() calls so far.

 private:
  int n_classes_;
  unsigned seed_;
};

}  // namespace beamner::testing
