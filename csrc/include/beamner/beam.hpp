// Beam search over many documents at once, as spaCy's BeamBatch drives
// thinc's Beam (spacy/pipeline/_parser_internals/_beam_utils.pyx): one
// k-best beam per document (kbest_beam.hpp, thinc's semantics), the BILUO
// transition system's validity and oracle costs, and the step transforms
// (normalization.hpp, span_constraints.hpp) between them.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "beamner/doc.hpp"
#include "beamner/kbest_beam.hpp"
#include "beamner/normalization.hpp"
#include "beamner/scorer.hpp"
#include "beamner/span_constraints.hpp"
#include "beamner/state.hpp"
#include "beamner/step.hpp"
#include "beamner/transition_system.hpp"
#include "beamner/types.hpp"

namespace beamner {

struct BeamOptions {
  /// The widest beam accepted: each document's beam reserves its slots up
  /// front, so a wider one would be a failed allocation, not a search.
  static constexpr int kMaxWidth = 1 << 16;
  /// Beam width k (1 ..= kMaxWidth).
  int width = 1;
  /// Keep candidates whose probability is >= density times the best one's
  /// (thinc's min_density, 0..1).
  float density = 0.0f;
  /// Gold-constrained search: only the lowest-cost valid actions (needs golds).
  bool follow_gold = false;
  /// Reclaim history nodes that no state in the beam can reach any more, so
  /// a long document keeps O(length + width) nodes, not O(length * width).
  /// BeamUpdate turns it off: it keeps node ids from earlier steps.
  bool compact_history = true;
  /// Raw scores (kNone, spaCy's) or locally normalized ones (kLocal).
  Normalize normalize = Normalize::kNone;
};

/// A candidate entity of a normalized beam (Normalize::kLocal): its
/// probability under the beam's posterior, and the interval its true marginal
/// (under the model) lies in: `lower` is the model probability of the beam's
/// parses that hold it, `upper` that plus the mass the beam does not hold
/// (1 - coverage). Where the beam holds every parse, lower == upper.
struct EntityBounds {
  Entity entity;
  double probability = 0.0;  ///< Summed softmax probabilities of the parses holding it.
  double lower = 0.0;
  double upper = 0.0;
};

/// One finished parse of a document.
struct Parse {
  float score = 0.0f;                 ///< Beam score (sum of action scores plus bonuses).
  double probability = 0.0;           ///< Softmax of the final beam's scores.
  float loss = 0.0f;                  ///< Summed oracle costs (0 without golds).
  std::vector<std::int32_t> history;  ///< Action classes taken.
  std::vector<Entity> entities;       ///< As spaCy's get_beam_parses lists them.
};

class BeamBatch {
 public:
  /// Throws std::invalid_argument on width < 1, a density outside [0, 1]
  /// or not finite, or golds that do not match the documents.
  BeamBatch(const TransitionSystem& system, DocBatch docs, BeamOptions options,
            std::vector<Gold> golds = {});

  int n_docs() const { return docs_.n_docs(); }
  const DocBatch& docs() const { return docs_; }
  int n_actions() const { return system_.n_actions(); }
  const BeamOptions& options() const { return options_; }
  bool is_done() const;
  /// Unfinished states, in the order `advance` expects their score rows.
  std::int64_t n_unfinished() const;
  /// (n_unfinished, 3) context token ids.
  void context_tokens(std::int32_t* out) const;
  /// (n_unfinished, n_actions) validity, 0/1.
  void valid_actions(std::uint8_t* out) const;
  /// (n_unfinished, n_actions) oracle costs (needs golds); invalid actions cost 9000.
  void costs(float* out) const;

  /// One step: scores is (n_rows, n_cols) C order for the unfinished states.
  /// Throws std::invalid_argument (and changes nothing) on a shape mismatch,
  /// a score that is NaN or infinite, or a document none of whose states has
  /// a valid action (inconsistent preset entities).
  void advance(const float* scores, std::int64_t n_rows, std::int64_t n_cols);
  /// Run to the end, scoring with `scorer`.
  void run(Scorer& scorer);
  /// Steps taken so far.
  int n_steps() const { return steps_; }

  /// The document's beam, best first (slot order, as thinc keeps it).
  std::vector<Parse> parses(int doc) const;
  /// Probability of each (start, end, label) summed over the parses that hold it.
  std::vector<std::pair<Entity, double>> entity_probabilities(int doc) const;
  /// History nodes the document's beam holds now (memory diagnostics).
  std::size_t history_nodes(int doc) const;
  /// Constrains document `doc`'s parses (before the first step): a validity
  /// mask on top of spaCy's rules, applied after normalization, so a parse
  /// keeps the score it has without constraints (under kLocal its model
  /// log-probability) and the final beam holds the best parses of the event.
  /// A forbidden span also masks the moves into a state whose only way on
  /// would close it, so with one constraint per document no state dead-ends
  /// (span_distributions uses one). With several, a state can still dead-end
  /// (e.g. forbidden [0, 2) and [0, 3) of a 3-token document after B at 0);
  /// it drops out, and a beam all of whose states do so ends empty as if
  /// infeasible, though some parse might meet the constraints. A document no parse of which can
  /// meet its constraints (a span across a sentence start, on whitespace,
  /// against preset entities) finishes without parses (`is_infeasible`).
  /// Throws std::out_of_range for a bad document, std::invalid_argument for a
  /// span outside it, std::logic_error after the first step.
  void constrain(int doc, const std::vector<SpanConstraint>& spans);
  /// Whether the document's constraints ruled out every parse.
  bool is_infeasible(int doc) const;
  /// Normalize::kLocal only: the model probability the document's final beam
  /// holds, the sum of exp(score) over its parses (each score is a sequence
  /// log-probability). Throws std::invalid_argument under Normalize::kNone.
  double coverage(int doc) const;
  /// Normalize::kLocal only: entity_probabilities with each entity's bounds,
  /// [mass of the parses holding it, that + 1 - coverage] (clipped to [0, 1]).
  /// Throws std::invalid_argument under Normalize::kNone.
  std::vector<EntityBounds> entity_bounds(int doc) const;

  /// Document `doc`'s k-best beam (read-only: training reads the slots and
  /// histories). Throws std::out_of_range for a bad document.
  const Beam<State>& beam(int doc) const;
  /// Whether the batch was built with golds (then slots carry losses).
  bool has_golds() const { return !golds_.empty(); }

 private:
  /// Calls f(doc, slot, row) for every unfinished slot of the unfinished
  /// documents, in the order of `advance`'s score rows.
  template <typename F>
  void for_each_row(F&& f) const;
  void check_doc(int doc) const;
  void require_normalized(const char* what) const;
  /// Validity (and costs, when `costs` is not null) of the unfinished states' rows.
  void compute_valid(std::uint8_t* valid, float* costs) const;
  /// Masks out of `valid` (the unfinished states' rows) what the span
  /// constraints forbid; `rows` is scratch.
  void apply_constraints(std::uint8_t* valid, std::vector<StepRow>& rows) const;
  /// Before a step changes anything: whether document `doc` (its rows from
  /// `row` on, advanced past them) keeps a candidate. False only for a
  /// constrained document (infeasible); throws std::invalid_argument for an
  /// unconstrained one without a move or a score that would overflow the
  /// running sum, std::length_error for a history past History::kMaxNodes.
  bool check_step(int doc, const float* scores, const std::uint8_t* valid, std::size_t& row) const;
  /// Entities of the parses, each with its parse's index, in entity order
  /// (stable: each entity's parses in beam order).
  static std::vector<std::pair<Entity, std::size_t>> sorted_entities(
      const std::vector<Parse>& parses);

  TransitionSystem system_;
  DocBatch docs_;
  BeamOptions options_;
  KBestOptions kbest_;
  std::vector<Gold> golds_;
  std::vector<Beam<State>> beams_;
  BeamScratch scratch_;
  std::vector<std::uint8_t> valid_;
  std::vector<float> costs_;
  LocalNormalization normalization_;
  SpanConstraints constraints_;
  std::vector<StepRow> rows_;                 ///< The step's rows, for the span constraints.
  std::vector<std::uint8_t> infeasible_;      ///< Per document: its constraints left no parse.
  std::vector<std::uint8_t> infeasible_now_;  ///< Constrained documents left without a move.
  int steps_ = 0;
};

}  // namespace beamner
