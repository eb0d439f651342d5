#include <cmath>
#include <set>
#include <stdexcept>
#include <vector>

#include "beamner/beam.hpp"
#include "catch_compat.hpp"

using namespace beamner;

namespace {

constexpr label_t PER = 11;
constexpr label_t LOC = 22;

// A deterministic stand-in for the neural model: scores depend on the
// context tokens only, as a real scorer's would.
class StubScorer final : public Scorer {
 public:
  explicit StubScorer(int n_classes) : n_classes_(n_classes) {}
  void score(const std::int32_t* context, std::int64_t n_states, float* scores) override {
    ++calls;
    for (std::int64_t i = 0; i < n_states; ++i) {
      const std::int32_t* c = context + i * kNumContextFeatures;
      for (int j = 0; j < n_classes_; ++j) {
        const unsigned h = static_cast<unsigned>((c[0] + 7) * 31 + (c[1] + 3) * 17 + j * 13);
        scores[i * n_classes_ + j] = static_cast<float>(h % 97) / 10.0f;
      }
    }
  }
  int n_classes() const override { return n_classes_; }
  int calls = 0;

 private:
  int n_classes_;
};

DocBatch docs_of(const std::vector<int>& lengths) {
  int total = 0;
  for (int n : lengths) total += n;
  return DocBatch(std::vector<TokenInfo>(static_cast<std::size_t>(total)),
                  std::vector<std::int32_t>(lengths.begin(), lengths.end()));
}

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

TEST_CASE("density clipping keeps fewer candidates") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  BeamBatch wide(t, docs_of({6}), BeamOptions{16, 0.0f});
  BeamBatch clipped(t, docs_of({6}), BeamOptions{16, 0.5f});
  StubScorer a(t.n_actions()), b(t.n_actions());
  wide.run(a);
  clipped.run(b);
  CHECK(clipped.parses(0).size() < wide.parses(0).size());
  CHECK(clipped.parses(0)[0].history == wide.parses(0)[0].history);
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
