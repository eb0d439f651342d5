// A consumer of the installed beamner C++ library: a transition system for
// three labels, two small documents, a toy scorer, and the k-best parses.
//
//   cmake -S examples/cpp -B build/example -DCMAKE_PREFIX_PATH=<beamner prefix>
//   cmake --build build/example && build/example/beamner_example
#include <beamner/beamner.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <map>
#include <string>
#include <vector>

namespace {

// Labels are spaCy StringStore hashes in real use; any non-zero ids work here.
const std::map<beamner::label_t, std::string> kLabelNames = {
    {101, "PERSON"}, {102, "ORG"}, {103, "GPE"}};

const char* move_name(beamner::Move move) {
  switch (move) {
    case beamner::Move::Missing:
      return "-";
    case beamner::Move::Begin:
      return "B";
    case beamner::Move::In:
      return "I";
    case beamner::Move::Last:
      return "L";
    case beamner::Move::Unit:
      return "U";
    case beamner::Move::Out:
      return "O";
  }
  return "?";
}

std::string label_name(beamner::label_t label) {
  const auto it = kLabelNames.find(label);
  return it == kLabelNames.end() ? std::to_string(label) : it->second;
}

std::string action_name(const beamner::TransitionSystem& system, std::int32_t clas) {
  const beamner::Action& action = system.action(clas);
  std::string name = move_name(action.move);
  if (action.label != 0) name += "-" + label_name(action.label);
  return name;
}

// Deterministic scores from a small hash of the context token ids and the class:
// stands in for a trained model.
class HashScorer final : public beamner::Scorer {
 public:
  explicit HashScorer(int n_classes) : n_classes_(n_classes) {}

  void score(const std::int32_t* context, std::int64_t n_states, float* scores) override {
    for (std::int64_t i = 0; i < n_states; ++i) {
      const std::int32_t* ids = context + i * beamner::kNumContextFeatures;
      for (int c = 0; c < n_classes_; ++c) {
        std::uint32_t h = 2166136261u;  // FNV-1a over (ids..., class)
        for (int f = 0; f < beamner::kNumContextFeatures; ++f) {
          h = (h ^ static_cast<std::uint32_t>(ids[f])) * 16777619u;
        }
        h = (h ^ static_cast<std::uint32_t>(c)) * 16777619u;
        scores[i * n_classes_ + c] = static_cast<float>(h % 1000u) / 250.0f - 2.0f;
      }
    }
    ++calls_;
  }

  int n_classes() const override { return n_classes_; }
  int calls() const { return calls_; }

 private:
  int n_classes_;
  int calls_ = 0;
};

beamner::TokenInfo token(bool sentence_start, bool is_space = false) {
  beamner::TokenInfo info;
  info.sent_start = sentence_start ? 1 : 0;
  info.is_space = is_space;
  return info;
}

int run() {
  const beamner::TransitionSystem system = beamner::TransitionSystem::from_labels({101, 102, 103});
  std::printf("beamner %s: %d actions:", beamner::kVersion, system.n_actions());
  for (int c = 0; c < system.n_actions(); ++c) {
    std::printf(" %s", action_name(system, c).c_str());
  }
  std::printf("\n");

  // Document 0: "Ada Lovelace met Babbage in London ." (7 tokens)
  // Document 1: "Hello  world" with a whitespace token in the middle (3 tokens)
  std::vector<beamner::TokenInfo> tokens;
  tokens.push_back(token(true));
  for (int i = 1; i < 7; ++i) tokens.push_back(token(false));
  tokens.push_back(token(true));
  tokens.push_back(token(false, /*is_space=*/true));
  tokens.push_back(token(false));
  beamner::DocBatch docs(std::move(tokens), {7, 3});

  beamner::BeamOptions options;
  options.width = 4;
  options.density = 0.0f;
  beamner::BeamBatch batch(system, docs, options);
  HashScorer scorer(system.n_actions());
  batch.run(scorer);
  std::printf("%d steps, %d scorer calls\n", batch.n_steps(), scorer.calls());

  int status = 0;
  for (int d = 0; d < batch.n_docs(); ++d) {
    const std::vector<beamner::Parse> parses = batch.parses(d);
    std::printf("doc %d: %zu parses\n", d, parses.size());
    double total = 0.0;
    for (std::size_t k = 0; k < parses.size(); ++k) {
      const beamner::Parse& parse = parses[k];
      total += parse.probability;
      std::printf("  #%zu p=%.6f score=%.4f actions:", k, parse.probability,
                  static_cast<double>(parse.score));
      for (std::int32_t clas : parse.history) std::printf(" %s", action_name(system, clas).c_str());
      std::printf("\n     entities:");
      if (parse.entities.empty()) std::printf(" (none)");
      for (const beamner::Entity& ent : parse.entities) {
        std::printf(" [%d,%d) %s", ent.start, ent.end, label_name(ent.label).c_str());
      }
      std::printf("\n");
    }
    std::printf("  probabilities sum to %.9f\n", total);
    if (parses.empty() || !(std::fabs(total - 1.0) <= 1e-6)) {
      std::fprintf(stderr, "doc %d: probabilities sum to %.9f, not 1\n", d, total);
      status = 1;
    }
    for (const auto& [entity, probability] : batch.entity_probabilities(d)) {
      std::printf("  P([%d,%d) %s) = %.6f\n", entity.start, entity.end,
                  label_name(entity.label).c_str(), probability);
    }
  }
  return status;
}

}  // namespace

int main() {
  try {
    return run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
