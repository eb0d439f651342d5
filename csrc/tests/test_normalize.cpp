// The normalized beam (BeamOptions::normalize = Normalize::kLocal): the
// log-softmax kernel, coverage and bounds against an exhaustive enumeration
// of every parse, and Normalize::kNone untouched.
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "beamner/beam.hpp"
#include "catch_compat.hpp"
#include "fixtures.hpp"
#include "log_softmax.hpp"

using namespace beamner;
using namespace beamner::testing;

namespace {

using EntityKey = std::tuple<std::int32_t, std::int32_t, label_t>;

// Every valid action sequence of document `doc`, each with its probability
// under the locally normalized model (double throughout): the exact marginals.
struct Enumeration {
  int n_parses = 0;
  double total = 0.0;
  std::map<EntityKey, double> marginals;
};

void enumerate(const TransitionSystem& t, const DocBatch& docs, int doc, const StubScorer& s,
               State state, std::vector<std::int32_t>& history, double logp, Enumeration& out) {
  if (state.is_final()) {
    const double p = std::exp(logp);
    ++out.n_parses;
    out.total += p;
    for (const Entity& e : t.entities(history.data(), history.size(), state.length)) {
      out.marginals[{e.start, e.end, e.label}] += p;
    }
    return;
  }
  const int n = t.n_actions();
  std::vector<std::uint8_t> valid(static_cast<std::size_t>(n));
  t.set_valid(state, docs.tokens(doc), valid.data());
  std::int32_t ctx[kNumContextFeatures];
  state.context_tokens(ctx, docs.offset(doc));
  std::vector<float> row(static_cast<std::size_t>(n));
  s.row(ctx, row.data());
  double max_ = -INFINITY;
  for (int j = 0; j < n; ++j) {
    if (valid[j]) max_ = std::max(max_, static_cast<double>(row[j]));
  }
  double sum = 0.0;
  for (int j = 0; j < n; ++j) {
    if (valid[j]) sum += std::exp(row[j] - max_);
  }
  const double lse = max_ + std::log(sum);
  for (int j = 0; j < n; ++j) {
    if (!valid[j]) continue;
    State next = state;
    t.apply(next, j);
    history.push_back(j);
    enumerate(t, docs, doc, s, next, history, logp + (row[j] - lse), out);
    history.pop_back();
  }
}

Enumeration enumerate_doc(const TransitionSystem& t, const DocBatch& docs, int doc,
                          const StubScorer& s) {
  Enumeration out;
  std::vector<std::int32_t> history;
  enumerate(t, docs, doc, s, State::initial(docs.length(doc)), history, 0.0, out);
  return out;
}

}  // namespace

TEST_CASE("exp_nonpositive is within 2 ulp of std::exp on [-708, 0]") {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> wide(-708.0, 0.0);
  std::uniform_real_distribution<double> narrow(-1.0, 0.0);
  double worst = 0.0;
  for (int i = 0; i < 200000; ++i) {
    const double x = i % 2 ? wide(rng) : narrow(rng);
    const double expected = std::exp(x);
    worst = std::max(worst, std::abs(exp_nonpositive(x) - expected) / expected);
  }
  CHECK(worst <= 2.0 * 2.220446049250313e-16);
  CHECK(exp_nonpositive(0.0) == 1.0);
  CHECK(exp_nonpositive(-1e300) < 1e-300);
}

TEST_CASE("exp_shifted: exp(x - shift) for a batch, within 2 ulp of std::exp") {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> normal(0.0f, 20.0f);
  for (int n : {0, 1, 3, 4, 5, 37, 600}) {
    std::vector<float> x(static_cast<std::size_t>(n));
    float max_ = -INFINITY;
    for (float& v : x) {
      v = normal(rng);
      max_ = std::max(max_, v);
    }
    std::vector<double> out(x.size(), -1.0);
    exp_shifted(x.data(), n, static_cast<double>(max_), out.data());
    for (int i = 0; i < n; ++i) {
      const double expected = std::exp(static_cast<double>(x[i]) - max_);
      CHECK(std::abs(out[i] - expected) <= expected * 4.5e-16);
    }
  }
}

TEST_CASE("log_softmax_valid_rows: each row's log-softmax over its valid cells") {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> normal(0.0f, 5.0f);
  for (int n_cols : {1, 2, 7, 8, 9, 37, 74, 130}) {
    const int n_rows = 50;
    std::vector<float> x(static_cast<std::size_t>(n_rows * n_cols));
    std::vector<std::uint8_t> valid(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) {
      x[i] = normal(rng);
      valid[i] = rng() % 3 != 0;
    }
    std::fill(valid.begin(), valid.begin() + n_cols, 0);  // row 0: nothing valid
    std::vector<float> out(x.size());
    std::vector<float> scratch;
    log_softmax_valid_rows(x.data(), valid.data(), n_rows, n_cols, out.data(), scratch);
    int n_off = 0;
    for (int i = 0; i < n_rows; ++i) {
      const float* xr = x.data() + i * n_cols;
      const std::uint8_t* vr = valid.data() + i * n_cols;
      const float* o = out.data() + i * n_cols;
      double max_ = -INFINITY;
      for (int j = 0; j < n_cols; ++j) {
        if (vr[j]) max_ = std::max(max_, static_cast<double>(xr[j]));
      }
      if (max_ == -INFINITY) {
        for (int j = 0; j < n_cols; ++j) CHECK(o[j] == 0.0f);
        continue;
      }
      long double sum = 0.0L;
      for (int j = 0; j < n_cols; ++j) {
        if (vr[j]) sum += std::exp(static_cast<long double>(xr[j]) - max_);
      }
      const double lse = max_ + static_cast<double>(std::log(sum));
      double total = 0.0;
      for (int j = 0; j < n_cols; ++j) {
        const float expected = static_cast<float>(static_cast<double>(xr[j]) - lse);
        // Equal but for a double rounding error landing on a float32 tie.
        CHECK(std::abs(o[j] - expected) <= std::abs(expected) * 1.2e-7f);
        n_off += o[j] != expected;
        if (vr[j]) {
          CHECK(o[j] <= 0.0f);
          total += std::exp(static_cast<double>(o[j]));
        }
      }
      CHECK(std::abs(total - 1.0) < 1e-6);
    }
    CHECK(n_off <= 1);
  }
}

TEST_CASE("normalize names parse and bad ones are refused") {
  CHECK(parse_normalize("none") == Normalize::kNone);
  CHECK(parse_normalize("local") == Normalize::kLocal);
  CHECK(std::string(normalize_name(Normalize::kLocal)) == "local");
  CHECK_THROWS_AS(parse_normalize("global"), std::invalid_argument);
  const TransitionSystem t = TransitionSystem::from_labels({PER});
  BeamOptions bad;
  bad.normalize = static_cast<Normalize>(7);
  CHECK_THROWS_AS(BeamBatch(t, docs_of({2}), bad), std::invalid_argument);
}

TEST_CASE("coverage and bounds need Normalize::kLocal") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  BeamBatch beam(t, docs_of({3}), BeamOptions{4, 0.0f});
  StubScorer scorer(t.n_actions(), 1);
  beam.run(scorer);
  CHECK_THROWS_AS(beam.coverage(0), std::invalid_argument);
  CHECK_THROWS_AS(beam.entity_bounds(0), std::invalid_argument);
}

TEST_CASE("a beam wider than the number of parses holds all of them: coverage 1, exact marginals") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  const DocBatch docs = docs_of({1, 2, 3, 4, 0});
  for (unsigned seed : {1u, 2u, 3u}) {
    StubScorer scorer(t.n_actions(), seed);
    BeamOptions options{512, 0.0f};
    options.normalize = Normalize::kLocal;
    BeamBatch beam(t, docs, options);
    beam.run(scorer);
    for (int d = 0; d < docs.n_docs(); ++d) {
      const Enumeration exact = enumerate_doc(t, docs, d, scorer);
      REQUIRE(exact.n_parses <= 512);
      CHECK(std::abs(exact.total - 1.0) < 1e-9);
      CHECK(beam.parses(d).size() == static_cast<std::size_t>(exact.n_parses));
      CHECK(std::abs(beam.coverage(d) - 1.0) < 1e-6);
      const auto bounds = beam.entity_bounds(d);
      CHECK(bounds.size() == exact.marginals.size());
      for (const EntityBounds& b : bounds) {
        const double m = exact.marginals.at({b.entity.start, b.entity.end, b.entity.label});
        CHECK(std::abs(b.probability - m) < 1e-6);
        CHECK(std::abs(b.lower - m) < 1e-6);
        CHECK(b.upper - b.lower < 1e-6);
      }
    }
  }
}

TEST_CASE("narrow normalized beams: every exact marginal lies inside its bounds") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  const DocBatch docs = docs_of({3, 4, 5, 6});
  for (unsigned seed : {4u, 5u}) {
    StubScorer scorer(t.n_actions(), seed);
    for (int width : {1, 2, 4, 16}) {
      for (float density : {0.0f, 0.01f}) {
        BeamOptions options{width, density};
        options.normalize = Normalize::kLocal;
        BeamBatch beam(t, docs, options);
        beam.run(scorer);
        for (int d = 0; d < docs.n_docs(); ++d) {
          const Enumeration exact = enumerate_doc(t, docs, d, scorer);
          const double coverage = beam.coverage(d);
          CHECK(coverage > 0.0);
          CHECK(coverage <= 1.0 + 1e-6);
          std::map<EntityKey, EntityBounds> by_key;
          for (const EntityBounds& b : beam.entity_bounds(d)) {
            CHECK(b.lower <= b.probability + 1e-12);
            CHECK(b.probability <= b.upper + 1e-6);
            by_key[{b.entity.start, b.entity.end, b.entity.label}] = b;
          }
          for (const auto& [key, m] : exact.marginals) {
            const auto it = by_key.find(key);
            // An entity no parse of the beam holds: its marginal is at most the mass dropped.
            const double lower = it == by_key.end() ? 0.0 : it->second.lower;
            const double upper =
                it == by_key.end() ? std::max(0.0, 1.0 - coverage) : it->second.upper;
            CHECK(lower <= m + 1e-6);
            CHECK(m <= upper + 1e-6);
          }
        }
      }
    }
  }
}

TEST_CASE("normalized parse scores are sums of step log-probabilities (no finished-state bonus)") {
  // Every BILUO move consumes one token, so a document's states all finish
  // on the same step and thinc's path-average bonus for finished states
  // never applies: each score is exactly the float32 sum of the history's
  // normalized step scores.
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  const DocBatch docs = docs_of({5, 3, 7});
  StubScorer scorer(t.n_actions(), 9);
  BeamOptions options{8, 0.0f};
  options.normalize = Normalize::kLocal;
  BeamBatch beam(t, docs, options);
  std::vector<float> scratch;
  while (!beam.is_done()) {
    const std::int64_t n = beam.n_unfinished();
    // Unfinished rows: every doc whose length exceeds the steps taken, whole beams.
    std::int64_t expected_rows = 0;
    for (int d = 0; d < docs.n_docs(); ++d) {
      if (docs.length(d) > beam.n_steps()) {
        expected_rows += static_cast<std::int64_t>(beam.parses(d).size());
      }
    }
    CHECK(n == expected_rows);
    std::vector<std::int32_t> ctx(static_cast<std::size_t>(n * kNumContextFeatures));
    std::vector<float> scores(static_cast<std::size_t>(n * t.n_actions()));
    beam.context_tokens(ctx.data());
    scorer.score(ctx.data(), n, scores.data());
    beam.advance(scores.data(), n, t.n_actions());
  }
  for (int d = 0; d < docs.n_docs(); ++d) {
    for (const Parse& p : beam.parses(d)) {
      REQUIRE(p.history.size() == static_cast<std::size_t>(docs.length(d)));
      State state = State::initial(docs.length(d));
      float sum = 0.0f;
      for (std::int32_t clas : p.history) {
        std::vector<std::uint8_t> valid(static_cast<std::size_t>(t.n_actions()));
        t.set_valid(state, docs.tokens(d), valid.data());
        std::int32_t ctx[kNumContextFeatures];
        state.context_tokens(ctx, docs.offset(d));
        std::vector<float> row(static_cast<std::size_t>(t.n_actions()));
        std::vector<float> normalized(row.size());
        scorer.row(ctx, row.data());
        log_softmax_valid_rows(row.data(), valid.data(), 1, t.n_actions(), normalized.data(),
                               scratch);
        sum += normalized[static_cast<std::size_t>(clas)];
        t.apply(state, clas);
      }
      CHECK(p.score == sum);
    }
  }
}

TEST_CASE("Normalize::kNone is the default and adds raw scores") {
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC});
  const DocBatch docs = docs_of({6, 2});
  StubScorer scorer(t.n_actions(), 3);
  BeamOptions defaults{8, 0.0f};
  CHECK(defaults.normalize == Normalize::kNone);
  BeamBatch raw(t, docs, defaults);
  raw.run(scorer);
  BeamOptions local_options{8, 0.0f};
  local_options.normalize = Normalize::kLocal;
  BeamBatch local(t, docs, local_options);
  local.run(scorer);
  for (int d = 0; d < docs.n_docs(); ++d) {
    // Raw sums of scores in [-4, 4) over a few tokens are not log-probabilities.
    bool any_positive = false;
    for (const Parse& p : raw.parses(d)) any_positive = any_positive || p.score > 0.0f;
    for (const Parse& p : local.parses(d)) CHECK(p.score <= 0.0f);
    CHECK(any_positive);
  }
}
