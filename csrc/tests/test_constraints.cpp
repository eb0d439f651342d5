#include <cmath>
#include <map>
#include <stdexcept>
#include <vector>

#include "beamner/beam.hpp"
#include "catch_compat.hpp"
#include "fixtures.hpp"

using namespace beamner;
using namespace beamner::testing;

namespace {

bool holds(const Parse& p, std::int32_t start, std::int32_t end) {
  for (const Entity& e : p.entities) {
    if (e.start == start && e.end == end && e.label != 0) return true;
  }
  return false;
}

double log_mass(const std::vector<Parse>& parses) {
  double top = -INFINITY;
  for (const Parse& p : parses) top = std::max(top, static_cast<double>(p.score));
  double sum = 0.0;
  for (const Parse& p : parses) sum += std::exp(p.score - top);
  return top + std::log(sum);
}

}  // namespace

TEST_CASE("forced and forbidden spans split an exhaustive beam exactly") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  const int n = 5;
  for (Normalize norm : {Normalize::kNone, Normalize::kLocal}) {
    BeamOptions options{1024, 0.0f};
    options.normalize = norm;
    BeamBatch all(t, DocBatch(std::vector<TokenInfo>(n), {n}), options);
    StubScorer scorer(t.n_actions());
    all.run(scorer);
    std::map<std::vector<std::int32_t>, float> score_of;
    for (const Parse& p : all.parses(0)) score_of[p.history] = p.score;
    for (std::int32_t s = 0; s < n; ++s) {
      for (std::int32_t e = s + 1; e <= n; ++e) {
        BeamBatch batch(t, DocBatch(std::vector<TokenInfo>(2 * n), {n, n}, {0, 0}), options);
        batch.constrain(0, {SpanConstraint{s, e, true}});
        batch.constrain(1, {SpanConstraint{s, e, false}});
        batch.run(scorer);
        const std::vector<Parse> forced = batch.parses(0);
        const std::vector<Parse> forbidden = batch.parses(1);
        REQUIRE(!forced.empty());
        REQUIRE(!forbidden.empty());
        // The two events partition the parses; each keeps its unconstrained
        // score (constraints mask actions after normalization).
        REQUIRE(forced.size() + forbidden.size() == score_of.size());
        for (const Parse& p : forced) {
          REQUIRE(holds(p, s, e));
          REQUIRE(score_of.at(p.history) == p.score);
        }
        for (const Parse& p : forbidden) {
          REQUIRE(!holds(p, s, e));
          REQUIRE(score_of.at(p.history) == p.score);
        }
        const double a = log_mass(forced);
        const double b = log_mass(forbidden);
        const double joint = std::max(a, b) + std::log1p(std::exp(-std::fabs(a - b)));
        REQUIRE(std::fabs(joint - log_mass(all.parses(0))) < 1e-4);
      }
    }
  }
}

TEST_CASE("a forbidden span never dead-ends a narrow beam") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  // Forbidding [0, 2) of a 2-token doc: an entity opened at 0 could only close
  // with the forbidden L, so B at 0 is masked; width 1 still finishes.
  for (int width : {1, 2, 8}) {
    BeamBatch batch(t, DocBatch(std::vector<TokenInfo>(2), {2}), BeamOptions{width, 0.0f});
    batch.constrain(0, {SpanConstraint{0, 2, false}});
    StubScorer scorer(t.n_actions());
    batch.run(scorer);
    REQUIRE(!batch.is_infeasible(0));
    for (const Parse& p : batch.parses(0)) REQUIRE(!holds(p, 0, 2));
  }
}

TEST_CASE("a span no parse can hold leaves its document without parses") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  std::vector<TokenInfo> tokens(8);
  tokens[2].sent_start = 1;  // doc 0: no entity crosses token 2's sentence start
  BeamBatch batch(t, DocBatch(tokens, {4, 4}), BeamOptions{4, 0.0f});
  batch.constrain(0, {SpanConstraint{1, 3, true}});
  batch.constrain(1, {SpanConstraint{1, 3, true}});
  StubScorer scorer(t.n_actions());
  batch.run(scorer);
  REQUIRE(batch.is_done());
  REQUIRE(batch.is_infeasible(0));
  REQUIRE(batch.parses(0).empty());
  REQUIRE(batch.entity_probabilities(0).empty());
  REQUIRE(!batch.is_infeasible(1));
  for (const Parse& p : batch.parses(1)) REQUIRE(holds(p, 1, 3));
}

TEST_CASE("span constraints are checked") {
  const TransitionSystem t = TransitionSystem::from_labels({PER});
  BeamBatch batch(t, DocBatch(std::vector<TokenInfo>(3), {3}), BeamOptions{2, 0.0f});
  REQUIRE_THROWS_AS(batch.constrain(0, {SpanConstraint{2, 4, true}}), std::invalid_argument);
  REQUIRE_THROWS_AS(batch.constrain(0, {SpanConstraint{1, 1, false}}), std::invalid_argument);
  REQUIRE_THROWS_AS(batch.constrain(1, {SpanConstraint{0, 1, true}}), std::out_of_range);
  StubScorer scorer(t.n_actions());
  std::vector<float> scores(static_cast<std::size_t>(t.n_actions()), 0.0f);
  batch.advance(scores.data(), 1, t.n_actions());
  REQUIRE_THROWS_AS(batch.constrain(0, {SpanConstraint{0, 1, true}}), std::logic_error);
}
