// The parts of the k-best beam that do not depend on its state type:
// history arena and compaction, density clipping and ordering. Where thinc's
// arithmetic is float32 or double, ours is the same, so scores agree bit for
// bit given the same score matrices.
#include "beamner/kbest_beam.hpp"

#include <algorithm>
#include <cmath>

#include "log_softmax.hpp"

namespace beamner {
namespace {

// A history's hash, extended by one action (splitmix64 finaliser).
inline std::uint64_t extend_hash(std::uint64_t hash, std::int32_t clas) {
  std::uint64_t z = hash + 0x9e3779b97f4a7c15ULL + static_cast<std::uint64_t>(clas);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// thinc pops candidates from a std::priority_queue<pair<float, size_t>>:
// highest score first, ties broken by the larger (slot * n_class + class).
// A function object, so that std::partial_sort inlines it.
struct RanksBefore {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return b.score < a.score || (!(a.score < b.score) && b.id < a.id);
  }
};

// Softmax over all candidates in double; keeps those with prob >= density / Z.
void clip_density(std::vector<Candidate>& candidates, float density, DensityExp exp,
                  BeamScratch& scratch) {
  double max_ = candidates[0].score;
  for (const Candidate& c : candidates) {
    if (c.score > max_) max_ = c.score;
  }
  std::vector<double>& exps = scratch.exps;
  exps.resize(candidates.size());
  double Z = 0.0;
  if (exp == DensityExp::kVectorised) {
    scratch.floats.resize(candidates.size());
    for (std::size_t i = 0; i < candidates.size(); ++i) scratch.floats[i] = candidates[i].score;
    exp_shifted(scratch.floats.data(), static_cast<std::int64_t>(candidates.size()), max_,
                exps.data());
    for (std::size_t i = 0; i < candidates.size(); ++i) Z += exps[i];
  } else {
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      exps[i] = std::exp(candidates[i].score - max_);
      Z += exps[i];
    }
  }
  const double cutoff = (1.0 / Z) * static_cast<double>(density);
  std::size_t kept = 0;
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    candidates[kept] = candidates[i];
    kept += exps[i] / Z >= cutoff;
  }
  candidates.resize(kept);
}

}  // namespace

std::int32_t History::extend(std::int32_t parent, std::uint64_t parent_hash, std::int32_t clas) {
  const auto node = static_cast<std::int32_t>(nodes_.size());
  nodes_.push_back({parent, clas, extend_hash(parent_hash, clas)});
  return node;
}

std::vector<std::int32_t> History::path(std::int32_t node) const {
  std::vector<std::int32_t> out;
  while (node >= 0) {
    const HistoryNode& h = (*this)[node];
    out.push_back(h.clas);
    node = h.parent;
  }
  std::reverse(out.begin(), out.end());
  return out;
}

void History::compact(std::int32_t* live, std::size_t n, std::vector<std::int32_t>& new_index) {
  // Nodes are appended after their parents, so keeping the reachable ones
  // in order keeps every parent id below its children's.
  constexpr std::int32_t kUnreached = -1;
  constexpr std::int32_t kReached = -2;
  new_index.assign(nodes_.size(), kUnreached);
  for (std::size_t i = 0; i < n; ++i) {
    for (std::int32_t node = live[i];
         node >= 0 && new_index[static_cast<std::size_t>(node)] == kUnreached;
         node = (*this)[node].parent) {
      new_index[static_cast<std::size_t>(node)] = kReached;
    }
  }
  std::size_t kept = 0;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (new_index[i] == kUnreached) continue;
    HistoryNode node = nodes_[i];
    if (node.parent >= 0) node.parent = new_index[static_cast<std::size_t>(node.parent)];
    new_index[i] = static_cast<std::int32_t>(kept);
    nodes_[kept++] = node;
  }
  nodes_.resize(kept);
  for (std::size_t i = 0; i < n; ++i) {
    if (live[i] >= 0) live[i] = new_index[static_cast<std::size_t>(live[i])];
  }
  // Amortised O(1) per node: the next compaction waits until the history
  // has doubled since this one.
  compact_at_ = std::max(kMinCompactNodes, 2 * kept);
  nodes_.shrink_to_fit();
}

std::size_t select_candidates(std::vector<Candidate>& candidates, const KBestOptions& options,
                              BeamScratch& scratch) {
  if (options.density != 0.0f && !candidates.empty()) {
    clip_density(candidates, options.density, options.exp, scratch);
  }
  const std::size_t n_keep = std::min(candidates.size(), static_cast<std::size_t>(options.width));
  std::partial_sort(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(n_keep),
                    candidates.end(), RanksBefore{});
  return n_keep;
}

}  // namespace beamner
