// Regressions found by the fuzzer (csrc/fuzz): inputs the documented
// validation must reject, and the batch must stay usable afterwards.
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "beamner/beam.hpp"
#include "catch_compat.hpp"
#include "fixtures.hpp"

using namespace beamner;
using beamner::testing::StubScorer;

TEST_CASE("finite scores whose running sum overflows are rejected, not an empty beam") {
  const TransitionSystem t = TransitionSystem::from_labels({11});
  for (float density : {0.0f, 0.5f}) {
    BeamBatch beam(t, DocBatch(std::vector<TokenInfo>(4), {4}), BeamOptions{4, density});
    const float huge = std::numeric_limits<float>::max();
    std::vector<float> scores(static_cast<std::size_t>(beam.n_unfinished() * t.n_actions()), huge);
    beam.advance(scores.data(), beam.n_unfinished(), t.n_actions());  // 0 + max: finite
    const std::int64_t n = beam.n_unfinished();
    scores.assign(static_cast<std::size_t>(n * t.n_actions()), huge);
    // Before the fix the sum became inf: NaN probabilities with density 0,
    // and an empty beam (is_done, no parses) with density > 0.
    REQUIRE_THROWS_AS(beam.advance(scores.data(), n, t.n_actions()), std::invalid_argument);
    REQUIRE(beam.n_steps() == 1);
    REQUIRE(beam.n_unfinished() == n);
    while (!beam.is_done()) {
      scores.assign(static_cast<std::size_t>(beam.n_unfinished() * t.n_actions()), -1.0f);
      beam.advance(scores.data(), beam.n_unfinished(), t.n_actions());
    }
    const std::vector<Parse> parses = beam.parses(0);
    REQUIRE(!parses.empty());
    double total = 0.0;
    for (const Parse& p : parses) {
      REQUIRE(std::isfinite(p.score));
      REQUIRE(p.history.size() == 4);
      total += p.probability;
    }
    REQUIRE(total == Approx(1.0));
  }
}

TEST_CASE("a long document keeps O(length + width) history nodes, with the same parses") {
  const TransitionSystem t = TransitionSystem::from_labels({11, 22, 33});
  constexpr int kLength = 100000;
  constexpr int kWidth = 16;
  std::vector<std::vector<Parse>> results;
  std::vector<std::size_t> nodes;
  for (bool compact : {true, false}) {
    BeamOptions options{kWidth, 0.0f};
    options.compact_history = compact;
    BeamBatch beam(t, DocBatch(std::vector<TokenInfo>(kLength), {kLength}), options);
    StubScorer scorer(t.n_actions());
    beam.run(scorer);
    nodes.push_back(beam.history_nodes(0));
    results.push_back(beam.parses(0));
  }
  // Uncompacted: every expansion's node, about width * length of them.
  CHECK(nodes[1] >= static_cast<std::size_t>(kWidth - 1) * kLength);
  // Compacted: the surviving paths, plus at most one doubling since the
  // last compaction.
  CHECK(nodes[0] <= 3 * static_cast<std::size_t>(kLength));
  REQUIRE(results[0].size() == results[1].size());
  for (std::size_t i = 0; i < results[0].size(); ++i) {
    CHECK(results[0][i].score == results[1][i].score);
    CHECK(results[0][i].history == results[1][i].history);
    CHECK(results[0][i].entities == results[1][i].entities);
  }
}

TEST_CASE("a width above kMaxWidth is refused, not a failed allocation") {
  // Found by the Python fuzz test: width 526587144 threw std::bad_alloc.
  const TransitionSystem t = TransitionSystem::from_labels({11});
  const DocBatch docs(std::vector<TokenInfo>(3), {3});
  CHECK_THROWS_AS(BeamBatch(t, docs, BeamOptions{BeamOptions::kMaxWidth + 1, 0.0f}),
                  std::invalid_argument);
  CHECK_THROWS_AS(BeamBatch(t, docs, BeamOptions{526587144, 0.0f}), std::invalid_argument);
  BeamBatch widest(t, docs, BeamOptions{BeamOptions::kMaxWidth, 0.0f});
  CHECK(widest.n_unfinished() == 1);
}
