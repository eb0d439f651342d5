// The search state: small plain data, cheap to copy and compare (the NER
// never uses spaCy's stack, so a BILUO state is a buffer position and the
// open entity, if any). The entities found so far follow from the action
// history, which the beam keeps outside the state.
#pragma once

#include <cstdint>

#include "beamner/types.hpp"

namespace beamner {

struct State {
  std::int32_t pos = 0;         ///< B(0): first token of the buffer.
  std::int32_t length = 0;      ///< Tokens in the document.
  std::int32_t ent_start = -1;  ///< Start of the open entity, -1 if none.
  label_t ent_label = 0;        ///< Label of the open entity.

  static State initial(std::int32_t length) {
    State s;
    s.length = length;
    return s;
  }

  bool is_final() const { return pos >= length; }
  bool entity_is_open() const { return ent_start >= 0; }
  std::int32_t buffer_length() const { return length - pos; }
  /// spaCy's B(i): the i-th buffer token, -1 past the end.
  std::int32_t B(int i) const { return pos + i < length ? pos + i : -1; }

  /// spaCy's `set_context_tokens` with 3 features: B0, the open entity's
  /// first token, and B0-1 inside an entity; -1 for padding, others shifted
  /// by the document's batch offset.
  void context_tokens(std::int32_t* ids, std::int32_t offset) const {
    const std::int32_t b0 = B(0);
    const std::int32_t e0 = entity_is_open() ? ent_start : -1;
    const std::int32_t prev = (b0 == -1 || e0 == -1) ? -1 : b0 - 1;
    ids[0] = b0 >= 0 ? b0 + offset : -1;
    ids[1] = e0 >= 0 ? e0 + offset : -1;
    ids[2] = prev >= 0 ? prev + offset : -1;
  }

  friend bool operator==(const State& a, const State& b) {
    return a.pos == b.pos && a.length == b.length && a.ent_start == b.ent_start &&
           a.ent_label == b.ent_label;
  }
};

}  // namespace beamner
