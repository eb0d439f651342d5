#include <cmath>
#include <map>
#include <set>
#include <stdexcept>
#include <vector>

#include "beamner/beam.hpp"
#include "catch_compat.hpp"
#include "fixtures.hpp"

using namespace beamner;
using namespace beamner::testing;

namespace {

double total_probability(const std::vector<Parse>& parses) {
  double sum = 0.0;
  for (const Parse& p : parses) sum += p.probability;
  return sum;
}

}  // namespace

TEST_CASE("beam over a stub scorer: k distinct finished parses, best first") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  for (int width : {1, 2, 4, 16}) {
    BeamBatch beam(t, docs_of({5, 1, 0, 7}), BeamOptions{width, 0.0f});
    StubScorer scorer(t.n_actions());
    beam.run(scorer);
    REQUIRE(beam.is_done());
    for (int d = 0; d < 4; ++d) {
      const auto parses = beam.parses(d);
      REQUIRE(!parses.empty());
      REQUIRE(parses.size() <= static_cast<std::size_t>(width));
      CHECK(std::abs(total_probability(parses) - 1.0) < 1e-9);
      std::set<std::vector<std::int32_t>> seen;
      for (std::size_t i = 0; i < parses.size(); ++i) {
        CHECK(seen.insert(parses[i].history).second);
        if (i > 0) CHECK(parses[i - 1].score >= parses[i].score);
      }
    }
    CHECK(beam.parses(2).size() == 1);  // the empty document
    CHECK(beam.parses(2)[0].history.empty());
  }
}

TEST_CASE("width 1 follows the best valid action, ties to the higher class") {
  const TransitionSystem t = TransitionSystem::from_labels({PER});
  // Every class scores the same: thinc's queue pops the highest index first,
  // which is O (last class) whenever it is valid.
  BeamBatch beam(t, docs_of({3}), BeamOptions{1, 0.0f});
  const std::vector<float> flat(static_cast<std::size_t>(t.n_actions()), 1.0f);
  while (!beam.is_done()) beam.advance(flat.data(), 1, t.n_actions());
  const auto parses = beam.parses(0);
  REQUIRE(parses.size() == 1);
  CHECK(parses[0].history == std::vector<std::int32_t>(3, t.n_actions() - 1));
  CHECK(parses[0].score == 3.0f);
}

TEST_CASE("finished states get the path-average bonus while others catch up") {
  const TransitionSystem t = TransitionSystem::from_labels({PER});
  const int O = t.find({Move::Out, 0});
  BeamBatch beam(t, docs_of({1, 3}), BeamOptions{1, 0.0f});
  std::vector<float> scores(static_cast<std::size_t>(2 * t.n_actions()), 0.0f);
  scores[static_cast<std::size_t>(O)] = 2.0f;                  // doc 0: O scores 2
  scores[static_cast<std::size_t>(t.n_actions() + O)] = 1.0f;  // doc 1: O scores 1
  beam.advance(scores.data(), 2, t.n_actions());
  // Doc 0 is done after one step (score 2), doc 1 runs two more.
  std::vector<float> one(static_cast<std::size_t>(t.n_actions()), 0.0f);
  one[static_cast<std::size_t>(O)] = 1.0f;
  beam.advance(one.data(), 1, t.n_actions());
  beam.advance(one.data(), 1, t.n_actions());
  CHECK(beam.is_done());
  // Doc 0's beam stopped advancing once done (spaCy's BeamBatch skips done beams).
  CHECK(beam.parses(0)[0].score == 2.0f);
  CHECK(beam.parses(1)[0].score == 3.0f);
}

TEST_CASE("density clipping keeps fewer candidates, each scored as without it") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  // Wide enough to hold every parse of 4 tokens: the unclipped beam is exhaustive.
  BeamBatch all(t, docs_of({4}), BeamOptions{4096, 0.0f});
  BeamBatch clipped(t, docs_of({4}), BeamOptions{4096, 0.5f});
  StubScorer a(t.n_actions()), b(t.n_actions());
  all.run(a);
  clipped.run(b);
  std::map<std::vector<std::int32_t>, float> score_of;
  for (const Parse& p : all.parses(0)) score_of[p.history] = p.score;
  const std::vector<Parse> kept = clipped.parses(0);
  REQUIRE(!kept.empty());
  CHECK(kept.size() < score_of.size());
  for (const Parse& p : kept) CHECK(score_of.at(p.history) == p.score);
}

TEST_CASE("bad scores are rejected without changing the beam") {
  const TransitionSystem t = TransitionSystem::from_labels({PER});
  BeamBatch beam(t, docs_of({2}), BeamOptions{4, 0.0f});
  std::vector<float> scores(static_cast<std::size_t>(t.n_actions()), 0.5f);
  CHECK_THROWS_AS(beam.advance(scores.data(), 2, t.n_actions()), std::invalid_argument);
  CHECK_THROWS_AS(beam.advance(scores.data(), 1, t.n_actions() - 1), std::invalid_argument);
  scores[1] = std::nanf("");
  CHECK_THROWS_AS(beam.advance(scores.data(), 1, t.n_actions()), std::invalid_argument);
  scores[1] = INFINITY;
  CHECK_THROWS_AS(beam.advance(scores.data(), 1, t.n_actions()), std::invalid_argument);
  CHECK(beam.n_steps() == 0);
  scores[1] = 0.5f;
  beam.advance(scores.data(), 1, t.n_actions());
  CHECK(beam.n_steps() == 1);
}

TEST_CASE("inconsistent preset entities give an error, not an empty beam") {
  const TransitionSystem t = TransitionSystem::from_labels({PER});
  std::vector<TokenInfo> tokens(2);
  tokens[1].ent_iob = 3;  // a preset entity whose label the table lacks: nothing is valid
  tokens[1].ent_type = 99;
  BeamBatch beam(t, DocBatch(tokens, {2}), BeamOptions{2, 0.0f});
  const std::vector<float> scores(static_cast<std::size_t>(t.n_actions()), 0.0f);
  beam.advance(scores.data(), 1, t.n_actions());
  CHECK_THROWS_AS(beam.advance(scores.data(), 1, t.n_actions()), std::invalid_argument);
  CHECK(beam.n_steps() == 1);
}

TEST_CASE("options and documents are checked") {
  const TransitionSystem t = TransitionSystem::from_labels({PER});
  CHECK_THROWS_AS(BeamBatch(t, docs_of({2}), BeamOptions{0, 0.0f}), std::invalid_argument);
  CHECK_THROWS_AS(BeamBatch(t, docs_of({2}), BeamOptions{2, 1.5f}), std::invalid_argument);
  CHECK_THROWS_AS(BeamBatch(t, docs_of({2}), BeamOptions{2, std::nanf("")}), std::invalid_argument);
  CHECK_THROWS_AS(DocBatch(std::vector<TokenInfo>(3), {2}), std::invalid_argument);
  CHECK_THROWS_AS(DocBatch(std::vector<TokenInfo>(3), {4, -1}), std::invalid_argument);
}

TEST_CASE("gold-following beam only takes zero-cost actions") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  Gold gold;
  gold.ner = {{Move::Out, 0}, {Move::Begin, LOC}, {Move::Last, LOC}, {Move::Unit, PER}};
  BeamOptions options{4, 0.0f, true};
  BeamBatch beam(t, docs_of({4}), options, {gold});
  StubScorer scorer(t.n_actions());
  beam.run(scorer);
  for (const Parse& p : beam.parses(0)) {
    CHECK(p.loss == 0.0f);
    REQUIRE(p.entities.size() == 2);
    CHECK(p.entities[0] == Entity{1, 3, LOC});
    CHECK(p.entities[1] == Entity{3, 4, PER});
  }
}
