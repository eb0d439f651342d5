#include <stdexcept>
#include <string>

#include "beamner/doc.hpp"

namespace beamner {

DocBatch::DocBatch(std::vector<TokenInfo> tokens, const std::vector<std::int32_t>& lengths)
    : tokens_(std::move(tokens)), lengths_(lengths) {
  std::int64_t total = 0;
  offsets_.reserve(lengths_.size());
  for (std::size_t d = 0; d < lengths_.size(); ++d) {
    if (lengths_[d] < 0) {
      throw std::invalid_argument("document " + std::to_string(d) + " has negative length " +
                                  std::to_string(lengths_[d]));
    }
    offsets_.push_back(static_cast<std::int32_t>(total));
    starts_.push_back(static_cast<std::int32_t>(total));
    total += lengths_[d];
    if (total > INT32_MAX - 1) {
      throw std::invalid_argument("batch has more than 2^31 - 2 tokens (" + std::to_string(total) +
                                  " after document " + std::to_string(d) + "); split it");
    }
  }
  if (total != static_cast<std::int64_t>(tokens_.size())) {
    throw std::invalid_argument("document lengths add up to " + std::to_string(total) +
                                " tokens but " + std::to_string(tokens_.size()) +
                                " tokens were given");
  }
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const int iob = tokens_[i].ent_iob;
    if (iob < 0 || iob > 3) {
      throw std::invalid_argument("token " + std::to_string(i) + ": ent_iob must be 0..3, got " +
                                  std::to_string(iob));
    }
  }
}

DocBatch::DocBatch(std::vector<TokenInfo> tokens, const std::vector<std::int32_t>& lengths,
                   const std::vector<std::int32_t>& offsets)
    : DocBatch(std::move(tokens), lengths) {
  if (offsets.size() != lengths.size()) {
    throw std::invalid_argument("expected one offset per document (" +
                                std::to_string(lengths.size()) + "), got " +
                                std::to_string(offsets.size()));
  }
  for (std::size_t d = 0; d < offsets.size(); ++d) {
    if (offsets[d] < 0 || static_cast<std::int64_t>(offsets[d]) + lengths[d] > INT32_MAX - 1) {
      throw std::invalid_argument("document " + std::to_string(d) + " has offset " +
                                  std::to_string(offsets[d]) + "; offsets must be >= 0");
    }
  }
  offsets_ = offsets;
}

}  // namespace beamner
