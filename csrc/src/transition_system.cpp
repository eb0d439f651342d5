// BILUO validity, transitions and oracle costs, transcribed from spaCy 3.8's
// ner.pyx (classes Begin, In, Last, Unit, Out) so that every branch keeps its
// reason. `B_(i)` there reads an all-zero token past the buffer end; `token_at`
// does the same here.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#include "beamner/transition_system.hpp"

#include "check.hpp"

namespace beamner {
namespace {

const TokenInfo kEmptyToken{};

inline const TokenInfo& token_at(const State& s, const TokenInfo* tokens, int i) {
  const std::int32_t b = s.B(i);
  return b < 0 ? kEmptyToken : tokens[b];
}

bool begin_is_valid(const State& st, const TokenInfo* tokens, label_t label) {
  const TokenInfo& b0 = token_at(st, tokens, 0);
  const TokenInfo& b1 = token_at(st, tokens, 1);
  if (st.entity_is_open()) return false;
  if (st.buffer_length() < 2) return false;  // the last token must be U or O
  if (label == 0) return false;
  if (b0.ent_iob == 1) return false;  // don't clobber a preset entity
  if (b0.ent_iob == 3) {
    // Inside a preset entity: forced, across sentence starts and whitespace.
    return label == b0.ent_type && b1.ent_iob == 1;
  }
  if (b1.ent_iob == 3) return false;     // next token begins a preset entity
  if (b1.sent_start == 1) return false;  // no entity across sentences
  if (b0.is_space) return false;         // no entity starts on whitespace
  return true;
}

bool in_is_valid(const State& st, const TokenInfo* tokens, label_t label) {
  if (!st.entity_is_open()) return false;
  if (st.buffer_length() < 2) return false;
  const TokenInfo& b0 = token_at(st, tokens, 0);
  const TokenInfo& b1 = token_at(st, tokens, 1);
  if (label == 0) return false;
  if (st.ent_label != label) return false;
  if (b0.ent_iob == 3) return false;
  if (b1.ent_iob == 3) return false;  // next is a preset B, so this must be L
  if (b0.ent_iob == 1) {
    if (b1.ent_iob == 0 || b1.ent_iob == 2) return false;  // must be L
    return label == b0.ent_type;
  }
  if (st.B(1) != -1 && b1.sent_start == 1) return false;
  return true;
}

bool last_is_valid(const State& st, const TokenInfo* tokens, label_t label) {
  const TokenInfo& b0 = token_at(st, tokens, 0);
  const TokenInfo& b1 = token_at(st, tokens, 1);
  if (label == 0) return false;
  if (!st.entity_is_open()) return false;
  if (b0.ent_iob == 1 && b1.ent_iob != 1) return label == b0.ent_type;
  if (st.ent_label != label) return false;
  if (b1.ent_iob == 1) return false;  // a preset I follows, can't close here
  return true;
}

bool unit_is_valid(const State& st, const TokenInfo* tokens, label_t label) {
  const TokenInfo& b0 = token_at(st, tokens, 0);
  const TokenInfo& b1 = token_at(st, tokens, 1);
  if (label == 0) return b0.ent_type == 0 && b0.ent_iob == 3;  // blocked token
  if (st.entity_is_open()) return false;
  if (b1.ent_iob == 1) return false;  // next is I, so this must be B
  if (b0.ent_iob == 3) return label == b0.ent_type;
  if (b0.is_space) return false;
  return true;
}

bool out_is_valid(const State& st, const TokenInfo* tokens) {
  const TokenInfo& b0 = token_at(st, tokens, 0);
  if (st.entity_is_open()) return false;
  return b0.ent_iob != 3 && b0.ent_iob != 1;
}

// spaCy's _entity_is_sunk: the open entity cannot be right any more.
bool entity_is_sunk(const State& s, const Gold& gold) {
  if (!s.entity_is_open()) return false;
  const Action& g = gold.ner[static_cast<std::size_t>(s.ent_start)];
  if (g.move != Move::Begin && g.move != Move::Unit) return true;
  return g.label != s.ent_label;
}

float begin_cost(const State& s, const Gold& gold, label_t label) {
  const std::int32_t b0 = s.B(0);
  const Action& g = gold.ner[static_cast<std::size_t>(b0)];
  int cost = 0;
  if (g.move == Move::Missing) {
  } else if (g.move == Move::Begin) {
    cost += label != g.label;
  } else {
    cost += 1;
  }
  // With only one possible L left, a negative span starting here is certain.
  if (s.buffer_length() < 3) {
    for (const Entity& span : gold.negatives) {
      if (span.label == label && span.start == b0) {
        cost += 1;
        break;
      }
    }
  }
  return static_cast<float>(cost);
}

float in_cost(const State& s, const Gold& gold) {
  const Move next = s.B(1) >= 0 ? gold.ner[static_cast<std::size_t>(s.B(1))].move : Move::Out;
  const Move g = gold.ner[static_cast<std::size_t>(s.B(0))].move;
  const bool sunk = entity_is_sunk(s, gold);
  switch (g) {
    case Move::Missing:
    case Move::Begin:
    case Move::In:
      return 0.0f;
    case Move::Last:
      return (sunk && (next == Move::Out || next == Move::Missing)) ? 0.0f : 1.0f;
    case Move::Out:
      return (next == Move::Out || next == Move::Missing) ? 0.0f : 1.0f;
    case Move::Unit:
      return next != Move::Out ? 1.0f : 0.0f;
  }
  return 1.0f;
}

float last_cost(const State& s, const Gold& gold, label_t label) {
  const std::int32_t b0 = s.B(0);
  const Move g = gold.ner[static_cast<std::size_t>(b0)].move;
  int cost = 0;
  if (g == Move::In) cost += !entity_is_sunk(s, gold);
  for (const Entity& span : gold.negatives) {
    if (span.label == label && span.end - 1 == b0 && span.start == s.ent_start) {
      cost += 1;
      break;
    }
  }
  return static_cast<float>(cost);
}

float unit_cost(const State& s, const Gold& gold, label_t label) {
  const std::int32_t b0 = s.B(0);
  const Action& g = gold.ner[static_cast<std::size_t>(b0)];
  int cost = 0;
  if (g.move == Move::Missing) {
  } else if (g.move == Move::Unit) {
    cost += label != g.label;
  } else {
    cost += 1;
  }
  for (const Entity& span : gold.negatives) {
    if (span.label == label && span.start == b0 && span.end == b0 + 1) {
      cost += 1;
      break;
    }
  }
  return static_cast<float>(cost);
}

float out_cost(const State& s, const Gold& gold) {
  const Move g = gold.ner[static_cast<std::size_t>(s.B(0))].move;
  return (g == Move::Begin || g == Move::Unit) ? 1.0f : 0.0f;
}

}  // namespace

TransitionSystem::TransitionSystem(std::vector<Action> actions) : actions_(std::move(actions)) {
  BEAMNER_THROW_IF(actions_.empty(), std::invalid_argument, "transition table is empty");
  for (std::size_t i = 0; i < actions_.size(); ++i) {
    const Action& a = actions_[i];
    const auto move = static_cast<int>(a.move);
    BEAMNER_THROW_IF(move < 1 || move >= kNumMoves, std::invalid_argument, "action ", i, ": move ",
                     move, " is not one of B, I, L, U, O (1..5)");
    BEAMNER_THROW_IF(a.move == Move::Out && a.label != 0, std::invalid_argument, "action ", i,
                     ": O cannot have a label, got label ", a.label);
    BEAMNER_THROW_IF(a.label == 0 && a.move != Move::Out && a.move != Move::Unit,
                     std::invalid_argument, "action ", i, ": move ", move,
                     " needs a label, got label 0 (only U and O may have label 0)");
    for (std::size_t j = 0; j < i; ++j) {
      BEAMNER_THROW_IF(actions_[j] == a, std::invalid_argument, "action ", i, " duplicates action ",
                       j);
    }
  }
  unlabelled_.fill(-1);
  for (auto& mask : labelled_) mask.assign(actions_.size(), 0);
  for (std::size_t i = 0; i < actions_.size(); ++i) {
    const Action& a = actions_[i];
    const auto move = static_cast<std::size_t>(a.move);
    if (a.label == 0) {
      unlabelled_[move] = static_cast<int>(i);
      continue;
    }
    labelled_[move][i] = 1;
    auto it =
        std::lower_bound(by_label_.begin(), by_label_.end(), a.label,
                         [](const auto& entry, label_t label) { return entry.first < label; });
    if (it == by_label_.end() || it->first != a.label) {
      std::array<int, kNumMoves> none;
      none.fill(-1);
      it = by_label_.insert(it, {a.label, none});
    }
    it->second[move] = static_cast<int>(i);
  }
}

int TransitionSystem::class_of(Move move, label_t label) const {
  if (label == 0) return unlabelled_[static_cast<std::size_t>(move)];
  const auto it =
      std::lower_bound(by_label_.begin(), by_label_.end(), label,
                       [](const auto& entry, label_t value) { return entry.first < value; });
  return it != by_label_.end() && it->first == label ? it->second[static_cast<std::size_t>(move)]
                                                     : -1;
}

TransitionSystem TransitionSystem::from_labels(const std::vector<label_t>& labels) {
  std::vector<Action> actions;
  for (Move move : {Move::Begin, Move::In, Move::Last, Move::Unit}) {
    for (label_t label : labels) {
      BEAMNER_THROW_IF(label == 0, std::invalid_argument,
                       "labels must be non-zero (0 is reserved for 'no label'), got 0");
      actions.push_back({move, label});
    }
  }
  actions.push_back({Move::Unit, 0});
  actions.push_back({Move::Out, 0});
  return TransitionSystem(std::move(actions));
}

int TransitionSystem::find(const Action& action) const {
  for (std::size_t i = 0; i < actions_.size(); ++i) {
    if (actions_[i] == action) return static_cast<int>(i);
  }
  return -1;
}

bool TransitionSystem::is_valid(const State& state, const TokenInfo* tokens, int clas) const {
  const Action& a = action(clas);
  switch (a.move) {
    case Move::Begin:
      return begin_is_valid(state, tokens, a.label);
    case Move::In:
      return in_is_valid(state, tokens, a.label);
    case Move::Last:
      return last_is_valid(state, tokens, a.label);
    case Move::Unit:
      return unit_is_valid(state, tokens, a.label);
    case Move::Out:
      return out_is_valid(state, tokens);
    case Move::Missing:
      return false;
  }
  return false;
}

namespace {

// What the *_is_valid functions above decide for one state, label by label:
// each depends on the label only through label == 0, label == the preset
// entity's type, or label == the open entity's label. So one rule per move
// answers for the whole table at once.
struct MoveRule {
  bool unlabelled = false;  ///< Valid with label 0 (blocked-token U, and O).
  bool any_label = false;   ///< Valid with every non-zero label.
  bool one_label = false;   ///< Valid with `label` only (when non-zero).
  label_t label = 0;
};

MoveRule only(label_t label) { return {false, false, true, label}; }
MoveRule any_label() { return {false, true, false, 0}; }

MoveRule begin_rule(const State& st, const TokenInfo& b0, const TokenInfo& b1) {
  if (st.entity_is_open() || st.buffer_length() < 2 || b0.ent_iob == 1) return {};
  if (b0.ent_iob == 3) return b1.ent_iob == 1 ? only(b0.ent_type) : MoveRule{};
  if (b1.ent_iob == 3 || b1.sent_start == 1 || b0.is_space) return {};
  return any_label();
}

MoveRule in_rule(const State& st, const TokenInfo& b0, const TokenInfo& b1) {
  if (!st.entity_is_open() || st.buffer_length() < 2) return {};
  if (b0.ent_iob == 3 || b1.ent_iob == 3) return {};
  if (b0.ent_iob == 1) {
    if (b1.ent_iob == 0 || b1.ent_iob == 2) return {};
    return st.ent_label == b0.ent_type ? only(st.ent_label) : MoveRule{};
  }
  if (st.B(1) != -1 && b1.sent_start == 1) return {};
  return only(st.ent_label);
}

MoveRule last_rule(const State& st, const TokenInfo& b0, const TokenInfo& b1) {
  if (!st.entity_is_open()) return {};
  if (b0.ent_iob == 1 && b1.ent_iob != 1) return only(b0.ent_type);
  if (b1.ent_iob == 1) return {};
  return only(st.ent_label);
}

MoveRule unit_rule(const State& st, const TokenInfo& b0, const TokenInfo& b1) {
  MoveRule rule;
  if (!st.entity_is_open() && b1.ent_iob != 1) {
    if (b0.ent_iob == 3) {
      rule = only(b0.ent_type);
    } else if (!b0.is_space) {
      rule = any_label();
    }
  }
  rule.unlabelled = b0.ent_type == 0 && b0.ent_iob == 3;  // blocked token
  return rule;
}

}  // namespace

void TransitionSystem::set_valid(const State& state, const TokenInfo* tokens,
                                 std::uint8_t* is_valid) const {
  const TokenInfo& b0 = token_at(state, tokens, 0);
  const TokenInfo& b1 = token_at(state, tokens, 1);
  MoveRule rules[kNumMoves];
  rules[static_cast<int>(Move::Begin)] = begin_rule(state, b0, b1);
  rules[static_cast<int>(Move::In)] = in_rule(state, b0, b1);
  rules[static_cast<int>(Move::Last)] = last_rule(state, b0, b1);
  rules[static_cast<int>(Move::Unit)] = unit_rule(state, b0, b1);
  rules[static_cast<int>(Move::Out)].unlabelled = out_is_valid(state, tokens);
  // Per move: all its labelled classes, or the one with the rule's label,
  // and the unlabelled class (label 0 never counts as "the" label).
  const std::size_t n = actions_.size();
  std::memset(is_valid, 0, n);
  for (int move = static_cast<int>(Move::Begin); move <= static_cast<int>(Move::Out); ++move) {
    const MoveRule& r = rules[move];
    if (r.any_label) {
      const std::uint8_t* mask = labelled_[static_cast<std::size_t>(move)].data();
      for (std::size_t i = 0; i < n; ++i) is_valid[i] |= mask[i];
    } else if (r.one_label && r.label != 0) {
      const int c = class_of(static_cast<Move>(move), r.label);
      if (c >= 0) is_valid[c] = 1;
    }
    if (r.unlabelled) {
      const int c = unlabelled_[static_cast<std::size_t>(move)];
      if (c >= 0) is_valid[c] = 1;
    }
  }
}

void TransitionSystem::apply(State& state, int clas) const {
  const Action& a = action(clas);
  switch (a.move) {
    case Move::Begin:
      state.ent_start = state.pos;
      state.ent_label = a.label;
      break;
    case Move::Last:
    case Move::Unit:
      // U opens and closes at once; like spaCy's open_ent/close_ent it leaves
      // no entity open, even when (blocked token, label 0) one was open before.
      state.ent_start = -1;
      state.ent_label = 0;
      break;
    case Move::In:
    case Move::Out:
    case Move::Missing:
      break;
  }
  state.pos += 1;
}

float TransitionSystem::cost(const State& state, const Gold& gold, int clas) const {
  const Action& a = action(clas);
  switch (a.move) {
    case Move::Begin:
      return begin_cost(state, gold, a.label);
    case Move::In:
      return in_cost(state, gold);
    case Move::Last:
      return last_cost(state, gold, a.label);
    case Move::Unit:
      return unit_cost(state, gold, a.label);
    case Move::Out:
      return out_cost(state, gold);
    case Move::Missing:
      return kInvalidCost;
  }
  return kInvalidCost;
}

void TransitionSystem::set_costs(const State& state, const TokenInfo* tokens, const Gold& gold,
                                 std::uint8_t* is_valid, float* costs) const {
  set_valid(state, tokens, is_valid);
  for (int i = 0; i < n_actions(); ++i)
    costs[i] = is_valid[i] ? cost(state, gold, i) : kInvalidCost;
}

std::vector<Entity> TransitionSystem::entities(const std::int32_t* history, std::size_t n,
                                               std::int32_t length) const {
  // Replays spaCy's _ents vector: B pushes an open entity, L closes the last
  // one, U pushes a closed one; open entities are not reported.
  std::vector<Entity> ents;
  std::int32_t pos = 0;
  for (std::size_t i = 0; i < n && pos < length; ++i, ++pos) {
    const Action& a = action(history[i]);
    if (a.move == Move::Begin) {
      ents.push_back({pos, -1, a.label});
    } else if (a.move == Move::Last && !ents.empty()) {
      ents.back().end = pos + 1;
    } else if (a.move == Move::Unit) {
      ents.push_back({pos, pos + 1, a.label});
    }
  }
  std::vector<Entity> closed;
  closed.reserve(ents.size());
  for (const Entity& e : ents) {
    if (e.start != -1 && e.end != -1) closed.push_back(e);
  }
  return closed;
}

}  // namespace beamner
