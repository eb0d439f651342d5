// Regressions found by the fuzzer (csrc/fuzz): inputs the documented
// validation must reject, and the batch must stay usable afterwards.
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "beamner/beam.hpp"
#include "catch_compat.hpp"

using namespace beamner;

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
