// Plain types shared by the whole engine. Values follow spaCy 3.8's NER
// (spacy/pipeline/_parser_internals/ner.pyx) so that tables, golds and
// results can cross the Python boundary without translation.
#pragma once

#include <cstdint>

namespace beamner {

/// spaCy's attr_t: a StringStore hash. 0 means "no label".
using label_t = std::uint64_t;

/// BILUO moves, numbered as in spaCy's `ner.pyx` enum.
enum class Move : std::uint8_t { Missing = 0, Begin = 1, In = 2, Last = 3, Unit = 4, Out = 5 };

constexpr int kNumMoves = 6;

/// One class of the transition table: a move and its entity label.
struct Action {
  Move move = Move::Out;
  label_t label = 0;

  friend bool operator==(const Action& a, const Action& b) {
    return a.move == b.move && a.label == b.label;
  }
};

/// A half-open token span [start, end) with a label.
struct Entity {
  std::int32_t start = 0;
  std::int32_t end = 0;
  label_t label = 0;

  friend bool operator==(const Entity& a, const Entity& b) {
    return a.start == b.start && a.end == b.end && a.label == b.label;
  }
  /// By start, then end, then label: the order entity listings are merged in.
  friend bool operator<(const Entity& a, const Entity& b) {
    if (a.start != b.start) return a.start < b.start;
    if (a.end != b.end) return a.end < b.end;
    return a.label < b.label;
  }
};

/// The cost spaCy gives an invalid action.
constexpr float kInvalidCost = 9000.0f;

/// Number of context features of spaCy's NER model (B0, first entity token, B0-1).
constexpr int kNumContextFeatures = 3;

}  // namespace beamner
