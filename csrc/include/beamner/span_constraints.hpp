// Span constraints as a step transform: per-document forced and forbidden
// entity spans, a validity mask on top of spaCy's rules.
#pragma once

#include <cstdint>
#include <vector>

#include "beamner/step.hpp"

namespace beamner {

/// A span constraint on one document's parses: every parse labels
/// [start, end) as an entity, with some label (`forced`), or none does.
struct SpanConstraint {
  std::int32_t start = 0;
  std::int32_t end = 0;
  bool forced = true;
};

class SpanConstraints {
 public:
  /// Adds constraints on document `doc` (of `length` tokens) of a batch of
  /// `n_docs`. Throws std::invalid_argument, adding none, for a span that is
  /// not a non-empty span of the document.
  void add(int doc, std::int32_t length, int n_docs, const std::vector<SpanConstraint>& spans);
  /// Whether any document is constrained.
  bool any() const { return !by_doc_.empty(); }
  /// Whether document `doc` is.
  bool constrains(int doc) const {
    return any() && !by_doc_[static_cast<std::size_t>(doc)].empty();
  }
  /// Clears the valid cells of step.rows' states whose action the
  /// constraints of their document forbid.
  void apply(Step& step) const;

 private:
  std::vector<std::vector<SpanConstraint>> by_doc_;  ///< Empty: none at all.
};

}  // namespace beamner
