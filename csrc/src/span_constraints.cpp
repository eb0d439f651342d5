#include "beamner/span_constraints.hpp"

#include <stdexcept>

#include "check.hpp"

namespace beamner {
namespace {

// Whether action `clas` in state `st` keeps constraint `c` satisfiable.
bool meets(const TransitionSystem& system, const State& st, const TokenInfo* tokens, int clas,
           const SpanConstraint& c) {
  const Action& a = system.action(clas);
  const std::int32_t p = st.pos;
  const bool labelled = a.label != 0;
  if (c.forced) {
    // Token start-1 may not open or continue an entity into the span, the
    // span opens at start (U if one token, else B), continues with I and
    // closes with L at end-1.
    if (p == c.start - 1) return a.move != Move::Begin && a.move != Move::In;
    if (p == c.start) {
      return labelled && a.move == (c.end - c.start == 1 ? Move::Unit : Move::Begin);
    }
    if (p > c.start && p < c.end - 1) return a.move == Move::In;
    if (p == c.end - 1) return a.move == Move::Last;
    return true;
  }
  if (c.end - c.start == 1) return !(p == c.start && labelled && a.move == Move::Unit);
  // The forbidden entity [start, end) can only be closed by L at end-1.
  if (p == c.end - 1 && st.ent_start == c.start) return a.move != Move::Last;
  // Entering end-1 with an entity open since start leaves I as the only way
  // on: allowed only if I will be valid there, so no state dead-ends.
  const bool enters_last = p + 1 == c.end - 1 && ((a.move == Move::Begin && p == c.start) ||
                                                  (a.move == Move::In && st.ent_start == c.start));
  if (enters_last) {
    State next = st;
    system.apply(next, clas);
    const int in = system.find(Action{Move::In, a.label});
    return in >= 0 && system.is_valid(next, tokens, in);
  }
  return true;
}

}  // namespace

void SpanConstraints::add(int doc, std::int32_t length, int n_docs,
                          const std::vector<SpanConstraint>& spans) {
  for (const SpanConstraint& c : spans) {
    BEAMNER_THROW_IF(c.start < 0 || c.end <= c.start || c.end > length, std::invalid_argument,
                     "document ", doc, ": constrained span [", c.start, ", ", c.end,
                     ") is not a non-empty span of its ", length, " tokens");
  }
  if (spans.empty()) return;
  if (by_doc_.empty()) by_doc_.resize(static_cast<std::size_t>(n_docs));
  auto& list = by_doc_[static_cast<std::size_t>(doc)];
  list.insert(list.end(), spans.begin(), spans.end());
}

void SpanConstraints::apply(Step& step) const {
  if (!any()) return;
  const auto width = static_cast<std::size_t>(step.n_cols);
  for (std::int64_t r = 0; r < step.n_rows; ++r) {
    const StepRow& row = step.rows[r];
    const TokenInfo* tokens = step.docs->tokens(row.doc);
    std::uint8_t* valid = step.valid + static_cast<std::size_t>(r) * width;
    for (const SpanConstraint& c : by_doc_[static_cast<std::size_t>(row.doc)]) {
      for (std::size_t j = 0; j < width; ++j) {
        if (valid[j] && !meets(*step.system, *row.state, tokens, static_cast<int>(j), c)) {
          valid[j] = 0;
        }
      }
    }
  }
}

}  // namespace beamner
