#include <vector>

#include "beamner/transition_system.hpp"
#include "catch_compat.hpp"
#include "fixtures.hpp"

using namespace beamner;
using namespace beamner::testing;

namespace {

TransitionSystem table() { return TransitionSystem::from_labels({PER, LOC}); }

int cls(const TransitionSystem& t, Move m, label_t l) {
  const int c = t.find({m, l});
  REQUIRE(c >= 0);
  return c;
}

std::vector<TokenInfo> plain(int n) { return std::vector<TokenInfo>(static_cast<std::size_t>(n)); }

}  // namespace

TEST_CASE("from_labels lays out B, I, L, U per label, then U-0 and O") {
  const TransitionSystem t = table();
  REQUIRE(t.n_actions() == 10);
  CHECK(t.action(0).move == Move::Begin);
  CHECK(t.action(1).label == LOC);
  CHECK(t.action(8).move == Move::Unit);
  CHECK(t.action(8).label == 0);
  CHECK(t.action(9).move == Move::Out);
}

TEST_CASE("tables reject moves spaCy never puts in them") {
  CHECK_THROWS_AS(TransitionSystem({}), std::invalid_argument);
  CHECK_THROWS_AS(TransitionSystem({{Move::Missing, 0}}), std::invalid_argument);
  CHECK_THROWS_AS(TransitionSystem({{Move::Out, PER}}), std::invalid_argument);
  CHECK_THROWS_AS(TransitionSystem({{Move::Begin, 0}}), std::invalid_argument);
  CHECK_THROWS_AS(TransitionSystem({{Move::Out, 0}, {Move::Out, 0}}), std::invalid_argument);
}

TEST_CASE("an entity cannot begin on the last token, nor continue past it") {
  const TransitionSystem t = table();
  const auto tokens = plain(2);
  State s = State::initial(2);
  CHECK(t.is_valid(s, tokens.data(), cls(t, Move::Begin, PER)));
  t.apply(s, cls(t, Move::Begin, PER));
  CHECK(s.entity_is_open());
  CHECK_FALSE(t.is_valid(s, tokens.data(), cls(t, Move::In, PER)));
  CHECK_FALSE(t.is_valid(s, tokens.data(), cls(t, Move::Last, LOC)));
  CHECK_FALSE(t.is_valid(s, tokens.data(), cls(t, Move::Out, 0)));
  CHECK(t.is_valid(s, tokens.data(), cls(t, Move::Last, PER)));
  t.apply(s, cls(t, Move::Last, PER));
  CHECK(s.is_final());
}

TEST_CASE("no entity across a sentence start or starting on whitespace") {
  const TransitionSystem t = table();
  auto tokens = plain(3);
  tokens[1].sent_start = 1;
  tokens[2].is_space = true;
  State s = State::initial(3);
  CHECK_FALSE(t.is_valid(s, tokens.data(), cls(t, Move::Begin, PER)));
  CHECK(t.is_valid(s, tokens.data(), cls(t, Move::Unit, PER)));
  t.apply(s, cls(t, Move::Out, 0));
  t.apply(s, cls(t, Move::Out, 0));
  CHECK_FALSE(t.is_valid(s, tokens.data(), cls(t, Move::Unit, PER)));
  CHECK(t.is_valid(s, tokens.data(), cls(t, Move::Out, 0)));
}

TEST_CASE("preset entities are forced, across sentence starts and whitespace") {
  const TransitionSystem t = table();
  auto tokens = plain(3);
  tokens[0] = {3, 0, true, LOC};
  tokens[1] = {1, 1, false, LOC};
  tokens[2] = {3, 0, false, 0};  // blocked
  State s = State::initial(3);
  std::vector<std::uint8_t> valid(static_cast<std::size_t>(t.n_actions()));
  t.set_valid(s, tokens.data(), valid.data());
  for (int c = 0; c < t.n_actions(); ++c) CHECK(valid[c] == (c == cls(t, Move::Begin, LOC)));
  t.apply(s, cls(t, Move::Begin, LOC));
  t.set_valid(s, tokens.data(), valid.data());
  for (int c = 0; c < t.n_actions(); ++c) CHECK(valid[c] == (c == cls(t, Move::Last, LOC)));
  t.apply(s, cls(t, Move::Last, LOC));
  t.set_valid(s, tokens.data(), valid.data());
  for (int c = 0; c < t.n_actions(); ++c) CHECK(valid[c] == (c == cls(t, Move::Unit, 0)));
}

TEST_CASE("context tokens: B0, entity start, B0-1, with the batch offset") {
  const TransitionSystem t = table();
  State s = State::initial(4);
  std::int32_t ids[3];
  s.context_tokens(ids, 100);
  CHECK(ids[0] == 100);
  CHECK(ids[1] == -1);
  CHECK(ids[2] == -1);
  t.apply(s, cls(t, Move::Out, 0));
  t.apply(s, cls(t, Move::Begin, PER));
  t.apply(s, cls(t, Move::In, PER));
  s.context_tokens(ids, 100);
  CHECK(ids[0] == 103);
  CHECK(ids[1] == 101);
  CHECK(ids[2] == 102);
}

TEST_CASE("oracle costs follow spaCy's BILUO table") {
  const TransitionSystem t = table();
  const auto tokens = plain(3);
  Gold gold;
  gold.ner = {{Move::Begin, PER}, {Move::Last, PER}, {Move::Missing, 0}};
  State s = State::initial(3);
  CHECK(t.cost(s, gold, cls(t, Move::Begin, PER)) == 0.0f);
  CHECK(t.cost(s, gold, cls(t, Move::Begin, LOC)) == 1.0f);
  CHECK(t.cost(s, gold, cls(t, Move::Unit, PER)) == 1.0f);
  CHECK(t.cost(s, gold, cls(t, Move::Out, 0)) == 1.0f);
  std::vector<std::uint8_t> valid(static_cast<std::size_t>(t.n_actions()));
  std::vector<float> costs(static_cast<std::size_t>(t.n_actions()));
  t.set_costs(s, tokens.data(), gold, valid.data(), costs.data());
  CHECK(costs[static_cast<std::size_t>(cls(t, Move::In, PER))] == kInvalidCost);
  // Missing gold costs nothing.
  t.apply(s, cls(t, Move::Out, 0));
  t.apply(s, cls(t, Move::Out, 0));
  CHECK(t.cost(s, gold, cls(t, Move::Unit, LOC)) == 0.0f);
  // A negative span adds a cost to the action that completes it.
  gold.negatives.push_back({2, 3, LOC});
  CHECK(t.cost(s, gold, cls(t, Move::Unit, LOC)) == 1.0f);
  CHECK(t.cost(s, gold, cls(t, Move::Unit, PER)) == 0.0f);
}

TEST_CASE("entities replay spaCy's entity list from a history") {
  const TransitionSystem t = table();
  const std::vector<std::int32_t> hist = {cls(t, Move::Unit, PER), cls(t, Move::Out, 0),
                                          cls(t, Move::Begin, LOC), cls(t, Move::Last, LOC)};
  const auto ents = t.entities(hist.data(), hist.size(), 4);
  REQUIRE(ents.size() == 2);
  CHECK(ents[0] == Entity{0, 1, PER});
  CHECK(ents[1] == Entity{2, 4, LOC});
}

TEST_CASE("set_valid's per-move rules agree with is_valid action by action") {
  // set_valid decides a whole row from one rule per move; is_valid keeps
  // spaCy's per-action functions. Random tokens and states, every branch.
  const TransitionSystem t = TransitionSystem::from_labels({PER, LOC, 33});
  const label_t types[] = {0, PER, LOC, 33, 99};
  std::uint64_t seed = 0x243f6a8885a308d3ULL;
  const auto next = [&seed](std::uint64_t n) {
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    return (seed >> 33) % n;
  };
  std::vector<std::uint8_t> row(static_cast<std::size_t>(t.n_actions()));
  int n_valid = 0;
  for (int trial = 0; trial < 200000; ++trial) {
    const int n = 1 + static_cast<int>(next(4));
    std::vector<TokenInfo> tokens(static_cast<std::size_t>(n));
    for (TokenInfo& tok : tokens) {
      tok.ent_iob = static_cast<std::int8_t>(next(4));
      tok.ent_type = types[next(5)];
      tok.sent_start = static_cast<std::int8_t>(static_cast<int>(next(3)) - 1);
      tok.is_space = next(4) == 0;
    }
    State s = State::initial(n);
    s.pos = static_cast<std::int32_t>(next(static_cast<std::uint64_t>(n)));
    if (s.pos > 0 && next(2) == 0) {
      s.ent_start = static_cast<std::int32_t>(next(static_cast<std::uint64_t>(s.pos)));
      s.ent_label = types[next(5)];
    }
    t.set_valid(s, tokens.data(), row.data());
    for (int c = 0; c < t.n_actions(); ++c) {
      REQUIRE(row[static_cast<std::size_t>(c)] == (t.is_valid(s, tokens.data(), c) ? 1 : 0));
      n_valid += row[static_cast<std::size_t>(c)];
    }
  }
  CHECK(n_valid > 100000);
}
