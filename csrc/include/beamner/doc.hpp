// Per-token inputs the NER transition system reads from a spaCy Doc.
#pragma once

#include <cstdint>
#include <vector>

#include "beamner/types.hpp"

namespace beamner {

/// The fields of spaCy's TokenC that BILUO validity depends on.
struct TokenInfo {
  /// Preset IOB: 0 missing, 1 I, 2 O, 3 B (spaCy's `ent_iob`). A blocked
  /// token is iob 3 with type 0.
  std::int8_t ent_iob = 0;
  /// spaCy's `sent_start`: 1 starts a sentence, 0 unknown, -1 does not.
  std::int8_t sent_start = 0;
  /// The lexeme's IS_SPACE flag.
  bool is_space = false;
  /// Preset entity label (`ent_type`), 0 when none.
  label_t ent_type = 0;
};

/// Many documents' tokens, concatenated. Document d covers tokens
/// [offsets[d], offsets[d] + lengths[d]); offsets are the batch offsets
/// spaCy adds to context token ids.
class DocBatch {
 public:
  DocBatch() = default;
  /// Throws std::invalid_argument if the lengths do not add up to the
  /// number of tokens, a length is negative, or a token's iob is not 0..3.
  DocBatch(std::vector<TokenInfo> tokens, const std::vector<std::int32_t>& lengths);
  /// As above, but with the batch offsets given (context token ids are
  /// shifted by them): for documents that are a subset of the batch a model
  /// ran on, as in training. Throws std::invalid_argument on a negative offset.
  DocBatch(std::vector<TokenInfo> tokens, const std::vector<std::int32_t>& lengths,
           const std::vector<std::int32_t>& offsets);

  int n_docs() const { return static_cast<int>(lengths_.size()); }
  std::int64_t n_tokens() const { return static_cast<std::int64_t>(tokens_.size()); }
  std::int32_t length(int doc) const { return lengths_[static_cast<std::size_t>(doc)]; }
  std::int32_t offset(int doc) const { return offsets_[static_cast<std::size_t>(doc)]; }
  const TokenInfo* tokens(int doc) const {
    return tokens_.data() + offsets_[static_cast<std::size_t>(doc)];
  }

 private:
  std::vector<TokenInfo> tokens_;
  std::vector<std::int32_t> lengths_;
  std::vector<std::int32_t> offsets_;  ///< Added to context token ids.
  std::vector<std::int32_t> starts_;   ///< Where each document's tokens begin in tokens_.
};

/// Gold annotation of one document for the dynamic oracle: one action per
/// token (Move::Missing where unannotated) and the negative spans
/// (spaCy's `incorrect_spans_key`), in document-relative token offsets.
struct Gold {
  std::vector<Action> ner;
  std::vector<Entity> negatives;
};

}  // namespace beamner
