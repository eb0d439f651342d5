#include <stdexcept>
#include <string>

#include "beamner/doc.hpp"
#include "check.hpp"

namespace beamner {

DocBatch::DocBatch(std::vector<TokenInfo> tokens, const std::vector<std::int32_t>& lengths)
    : tokens_(std::move(tokens)), lengths_(lengths) {
  std::int64_t total = 0;
  offsets_.reserve(lengths_.size());
  for (std::size_t d = 0; d < lengths_.size(); ++d) {
    BEAMNER_THROW_IF(lengths_[d] < 0, std::invalid_argument, "document ", d,
                     " has negative length ", lengths_[d]);
    offsets_.push_back(static_cast<std::int32_t>(total));
    starts_.push_back(static_cast<std::int32_t>(total));
    total += lengths_[d];
    BEAMNER_THROW_IF(total > INT32_MAX - 1, std::invalid_argument,
                     "batch has more than 2^31 - 2 tokens (", total, " after document ", d,
                     "); split it");
  }
  BEAMNER_THROW_IF(total != static_cast<std::int64_t>(tokens_.size()), std::invalid_argument,
                   "document lengths add up to ", total, " tokens but ", tokens_.size(),
                   " tokens were given");
  for (std::size_t i = 0; i < tokens_.size(); ++i) {
    const int iob = tokens_[i].ent_iob;
    BEAMNER_THROW_IF(iob < 0 || iob > 3, std::invalid_argument, "token ", i,
                     ": ent_iob must be 0..3, got ", iob);
  }
}

DocBatch::DocBatch(std::vector<TokenInfo> tokens, const std::vector<std::int32_t>& lengths,
                   const std::vector<std::int32_t>& offsets)
    : DocBatch(std::move(tokens), lengths) {
  BEAMNER_THROW_IF(offsets.size() != lengths.size(), std::invalid_argument,
                   "expected one offset per document (", lengths.size(), "), got ", offsets.size());
  for (std::size_t d = 0; d < offsets.size(); ++d) {
    BEAMNER_THROW_IF(
        offsets[d] < 0 || static_cast<std::int64_t>(offsets[d]) + lengths[d] > INT32_MAX - 1,
        std::invalid_argument, "document ", d, " has offset ", offsets[d],
        "; offsets must be >= 0");
  }
  offsets_ = offsets;
}

}  // namespace beamner
