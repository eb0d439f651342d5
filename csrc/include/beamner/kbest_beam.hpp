// A generic k-best beam with thinc's Beam semantics (thinc/extra/search.pyx,
// Beam._fill and Beam.advance): one candidate per finished slot (with the
// path-average bonus), one per valid action of the others, density clipping,
// float32 score accumulation, the same ordering and tie-breaking, and the
// slots' action histories in a prefix-tree arena that is compacted as it
// grows. It knows nothing of NER: the state type and how an action changes
// it come from the caller (BeamBatch, beam.hpp).
#pragma once

#include <cstdint>
#include <vector>

namespace beamner {

/// One action of a history, in the prefix tree shared by a beam's slots.
struct HistoryNode {
  std::int32_t parent;  ///< -1 for a history's first action.
  std::int32_t clas;
  std::uint64_t hash;  ///< Of the whole history up to this node.
};

/// The action histories of one beam: nodes appended after their parents, so
/// a parent's id is always below its children's.
class History {
 public:
  /// Node ids are int32: a beam may hold at most this many nodes.
  static constexpr std::size_t kMaxNodes = 0x7fffffff;

  std::size_t size() const { return nodes_.size(); }
  const HistoryNode& operator[](std::int32_t node) const {
    return nodes_[static_cast<std::size_t>(node)];
  }
  /// Appends `clas` after `parent` (-1 before the first action), whose
  /// history hashes to `parent_hash` (0 for the empty history).
  std::int32_t extend(std::int32_t parent, std::uint64_t parent_hash, std::int32_t clas);
  /// The actions up to and including `node` (-1: none), first to last.
  std::vector<std::int32_t> path(std::int32_t node) const;
  /// Whether enough nodes piled up since the last compaction for one to pay.
  bool wants_compaction() const { return nodes_.size() >= compact_at_; }
  /// Drops the nodes no id of `live` (n of them, -1 for none) reaches and
  /// rewrites `live` to the kept nodes' new ids. `scratch` is reused.
  void compact(std::int32_t* live, std::size_t n, std::vector<std::int32_t>& scratch);

 private:
  std::vector<HistoryNode> nodes_;
  std::size_t compact_at_ = kMinCompactNodes;
  /// Below this many nodes (16 bytes each) a history is never compacted.
  static constexpr std::size_t kMinCompactNodes = 1 << 14;
};

/// A candidate of a beam step: its score and thinc's queue id
/// (slot * n_class + class).
struct Candidate {
  float score;
  std::uint64_t id;
};

/// Where density clipping takes its exps from.
enum class DensityExp : std::uint8_t {
  kLibm,        ///< std::exp, bit for bit as thinc.
  kVectorised,  ///< The engine's vectorised kernel (within 2 ulp of std::exp).
};

struct KBestOptions {
  int width = 1;         ///< k (>= 1).
  float density = 0.0f;  ///< Keep candidates with probability >= density times the best's.
  DensityExp exp = DensityExp::kLibm;
  bool compact_history = true;  ///< Reclaim history nodes no slot reaches any more.
};

/// Buffers one beam step needs; shared by many beams stepped one after another.
struct BeamScratch {
  std::vector<Candidate> candidates;
  std::vector<double> exps;
  std::vector<float> floats;
  std::vector<std::int64_t> row_of_slot;
  std::vector<std::int32_t> live;
  std::vector<std::int32_t> new_index;
};

/// Thinc's selection from a beam step's candidates: density clipping (a
/// softmax over all of them in double), then the `width` best moved to the
/// front, best first: the highest score, ties to the larger id, as thinc pops
/// its priority queue. Returns how many are kept.
std::size_t select_candidates(std::vector<Candidate>& candidates, const KBestOptions& options,
                              BeamScratch& scratch);

/// A k-best beam over states of type S.
template <typename S>
class Beam {
 public:
  struct Slot {
    S state;
    float score = 0.0f;
    float loss = 0.0f;  ///< Summed action costs, when the caller gives them.
    bool done = false;
    std::int32_t node = -1;  ///< Last history node, -1 before the first action.
    std::uint64_t hash = 0;  ///< History hash (0 for the empty history).
  };

  /// One slot holding `initial`, finished already if `done`.
  Beam(const S& initial, bool done, int width) : done_(done) {
    slots_.reserve(static_cast<std::size_t>(width));
    next_.reserve(static_cast<std::size_t>(width));
    Slot first;
    first.state = initial;
    first.done = done;
    slots_.push_back(first);
  }

  /// Best first (thinc's slot order).
  const std::vector<Slot>& slots() const { return slots_; }
  const History& history() const { return history_; }
  /// Steps taken.
  int t() const { return t_; }
  bool is_done() const { return done_; }
  std::size_t n_unfinished() const {
    std::size_t n = 0;
    for (const Slot& slot : slots_) n += !slot.done;
    return n;
  }
  /// Finishes the beam without slots: no hypothesis is left.
  void clear() {
    slots_.clear();
    done_ = true;
  }

  /// One step. `rows`, `valid` and (if not null) `costs` hold n_class cells
  /// per unfinished slot, in slot order; `apply(S&, clas)` takes an action
  /// and returns whether the state is then final. At least one candidate
  /// must be left (a finished slot or a valid action).
  template <typename Apply>
  void advance(const float* rows, const std::uint8_t* valid, const float* costs,
               std::size_t n_class, const KBestOptions& options, BeamScratch& scratch,
               Apply&& apply);

 private:
  void fill(const float* rows, const std::uint8_t* valid, std::uint64_t n_class,
            BeamScratch& scratch) const;

  std::vector<Slot> slots_;
  std::vector<Slot> next_;
  History history_;
  int t_ = 0;
  bool done_ = false;
};

template <typename S>
void Beam<S>::fill(const float* rows, const std::uint8_t* valid, std::uint64_t n_class,
                   BeamScratch& scratch) const {
  // Beam._fill: one candidate per finished slot (with the path-average bonus
  // of TACL '13), one per valid action of the others. Written without
  // branches on validity (every cell is stored, the count advances only for
  // valid ones): the valid pattern is unpredictable.
  std::vector<Candidate>& candidates = scratch.candidates;
  candidates.resize(slots_.size() * n_class);
  std::size_t n_candidates = 0;
  scratch.row_of_slot.assign(slots_.size(), -1);
  std::int64_t row = 0;
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    const Slot& slot = slots_[i];
    const std::uint64_t base = i * n_class;
    if (slot.done) {
      const float s = slot.score;
      const float bonus_score = slot.node >= 0 ? s + s / static_cast<float>(t_) : s;
      candidates[n_candidates++] = {bonus_score, base};
      continue;
    }
    scratch.row_of_slot[i] = row;
    const float* r = rows + row * static_cast<std::int64_t>(n_class);
    const std::uint8_t* v = valid + row * static_cast<std::int64_t>(n_class);
    Candidate* out = candidates.data();
    for (std::uint64_t j = 0; j < n_class; ++j) {
      out[n_candidates] = {slot.score + r[j], base + j};
      n_candidates += v[j] != 0;
    }
    ++row;
  }
  candidates.resize(n_candidates);
}

template <typename S>
template <typename Apply>
void Beam<S>::advance(const float* rows, const std::uint8_t* valid, const float* costs,
                      std::size_t n_class, const KBestOptions& options, BeamScratch& scratch,
                      Apply&& apply) {
  const auto n = static_cast<std::uint64_t>(n_class);
  fill(rows, valid, n, scratch);
  const std::size_t n_keep = select_candidates(scratch.candidates, options, scratch);
  next_.clear();
  for (std::size_t k = 0; k < n_keep; ++k) {
    const Candidate& c = scratch.candidates[k];
    const std::size_t p = c.id / n;
    const auto clas = static_cast<std::int32_t>(c.id % n);
    const Slot& parent = slots_[p];
    Slot child = parent;
    child.score = c.score;
    if (!parent.done) {
      child.done = apply(child.state, clas);
      if (costs != nullptr) {
        child.loss = parent.loss + costs[static_cast<std::uint64_t>(scratch.row_of_slot[p]) * n +
                                         static_cast<std::uint64_t>(clas)];
      }
      child.node = history_.extend(parent.node, parent.hash, clas);
      child.hash = history_[child.node].hash;
    }
    next_.push_back(child);
  }
  slots_.swap(next_);
  t_ += 1;
  if (options.compact_history && history_.wants_compaction()) {
    scratch.live.resize(slots_.size());
    for (std::size_t i = 0; i < slots_.size(); ++i) scratch.live[i] = slots_[i].node;
    history_.compact(scratch.live.data(), slots_.size(), scratch.new_index);
    for (std::size_t i = 0; i < slots_.size(); ++i) slots_[i].node = scratch.live[i];
  }
  done_ = true;
  for (const Slot& slot : slots_) done_ = done_ && slot.done;
}

}  // namespace beamner
