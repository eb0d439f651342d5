// libFuzzer target for beamner's C++ boundary. The input bytes are decoded
// into a transition table, documents (preset entities that may conflict,
// labels outside the table, sentence starts or whitespace everywhere),
// golds, beam options (width 1..1024, density 0..1 or anything a float can
// hold) and score matrices of any shape holding NaN, inf, -0.0, huge and
// subnormal values; then BeamBatch (advance, run with a stub or a
// PrecomputedScorer, parses, entity_probabilities) and TransitionSystem
// walks are driven with them.
//
// The documented validation throws std::invalid_argument / std::out_of_range
// (both std::logic_error): those are expected and swallowed. Anything else
// is a finding: a crash, a sanitizer report, an uncaught exception, a hang,
// or a broken invariant checked below (which aborts).
//
// Built with clang -fsanitize=fuzzer (BEAMNER_BUILD_FUZZERS), or with any
// compiler and replay_main.cpp to replay the corpus under ctest.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

#include "beamner/beamner.hpp"

using namespace beamner;

namespace {

[[noreturn]] void broken(const char* what) {
  std::fprintf(stderr, "beamner fuzz: invariant broken: %s\n", what);
  std::abort();
}

#define FUZZ_CHECK(cond)        \
  do {                          \
    if (!(cond)) broken(#cond); \
  } while (0)

// Reads the input front to back. Past the end, structure bytes are 0 (small
// inputs stay small and fast) while `fill` goes on with a deterministic
// pseudo-random stream, so that score matrices need no input bytes.
class Reader {
 public:
  Reader(const std::uint8_t* data, std::size_t size)
      : p_(data), n_(size), lcg_(size * 2654435761u + 1) {}
  std::uint8_t u8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  std::uint8_t fill() {
    if (n_ > 0) return u8();
    lcg_ = lcg_ * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::uint8_t>(lcg_ >> 56);
  }
  bool exhausted() const { return n_ == 0; }
  std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | (u8() << 8)); }
  std::uint32_t u32() {
    return static_cast<std::uint32_t>(u16()) | (static_cast<std::uint32_t>(u16()) << 16);
  }
  float raw_f32() {
    const std::uint32_t bits = u32();
    float f;
    std::memcpy(&f, &bits, sizeof f);
    return f;
  }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
  std::uint64_t lcg_;
};

constexpr label_t kOutsideLabel = 999;  // a label no table holds

// One score: mostly small values with many ties; `mode` sprinkles the
// values that break naive code.
float score_value(Reader& in, int mode) {
  const std::uint8_t b = in.fill();
  if (mode == 0 || b < 200) return static_cast<float>(static_cast<std::int8_t>(in.fill())) / 8.0f;
  switch (b % 10) {
    case 0:
      return std::numeric_limits<float>::quiet_NaN();
    case 1:
      return std::numeric_limits<float>::infinity();
    case 2:
      return -std::numeric_limits<float>::infinity();
    case 3:
      return -0.0f;
    case 4:
      return std::numeric_limits<float>::max();
    case 5:
      return std::numeric_limits<float>::lowest();
    case 6:
      return std::numeric_limits<float>::denorm_min();
    case 7:
      return 1e30f;
    case 8:
      return -1e30f;
    default:
      return in.raw_f32();
  }
}

TransitionSystem make_system(Reader& in, std::vector<label_t>& labels) {
  const std::uint8_t kind = in.u8();
  if (kind % 4 != 0) {
    const int n_labels = 1 + in.u8() % 6;
    for (int i = 0; i < n_labels; ++i) labels.push_back(1 + in.u8() % 9);  // duplicates possible
    return TransitionSystem::from_labels(labels);
  }
  // A raw table: any move byte, a few labels.
  std::vector<Action> actions(1 + in.u8() % 24);
  for (Action& a : actions) {
    a.move = static_cast<Move>(in.u8() % 7);
    a.label = in.u8() % 4;
    if (a.label != 0) labels.push_back(a.label);
  }
  return TransitionSystem(std::move(actions));
}

label_t pick_label(Reader& in, const std::vector<label_t>& labels) {
  const std::uint8_t b = in.u8();
  if (b % 8 == 0) return 0;
  if (b % 8 == 1) return kOutsideLabel;
  if (labels.empty()) return 1;
  return labels[static_cast<std::size_t>(in.u8()) % labels.size()];
}

DocBatch make_docs(Reader& in, const std::vector<label_t>& labels, int width,
                   std::vector<std::int32_t>& lengths) {
  const int n_docs = in.u8() % 9;
  // Keep width * tokens bounded so one input stays well under the timeout.
  const std::int64_t max_tokens = std::min<std::int64_t>(1024, std::max(4, 16384 / width));
  std::int64_t total = 0;
  for (int d = 0; d < n_docs; ++d) {
    const std::uint8_t b = in.u8();
    std::int32_t len = b < 240 ? b % 24 : static_cast<std::int32_t>(in.u16() % 4096);
    len = static_cast<std::int32_t>(std::min<std::int64_t>(len, max_tokens - total));
    if (b == 255 && in.u8() == 0) len = -1;  // rejected by DocBatch
    lengths.push_back(len);
    total += std::max(len, 0);
  }
  const std::uint8_t style = in.u8();
  std::vector<TokenInfo> tokens(static_cast<std::size_t>(total));
  for (TokenInfo& t : tokens) {
    const std::uint8_t b = style % 4 == 0 ? 0 : in.u8();
    t.ent_iob = static_cast<std::int8_t>(style == 7 ? 4 + b % 3 : b % 4);  // 7: invalid iob
    t.sent_start = static_cast<std::int8_t>(static_cast<int>((b >> 2) % 3) - 1);
    t.is_space = ((b >> 4) & 1) != 0;
    t.ent_type = (t.ent_iob == 1 || t.ent_iob == 3) ? pick_label(in, labels) : 0;
    if ((b >> 5) == 7) t.ent_type = pick_label(in, labels);  // a type without IOB
    if (style % 8 == 1) t.sent_start = 1;                    // sentence starts everywhere
    if (style % 8 == 2) t.is_space = true;                   // all whitespace
  }
  // A trailing mismatch: more tokens than the lengths add up to.
  if (style == 9) tokens.push_back(TokenInfo{});
  return DocBatch(std::move(tokens), lengths);
}

std::vector<Gold> make_golds(Reader& in, const std::vector<std::int32_t>& lengths,
                             const std::vector<label_t>& labels) {
  std::vector<Gold> golds;
  const std::uint8_t kind = in.u8();
  if (kind % 3 != 0) return golds;
  for (std::int32_t len : lengths) {
    Gold g;
    const std::int32_t n = (kind == 3 && in.u8() == 0) ? len + 1 : std::max(len, 0);
    g.ner.resize(static_cast<std::size_t>(n));
    for (Action& a : g.ner) {
      const std::uint8_t b = in.u8();
      a.move = static_cast<Move>(b % (kind == 6 ? 7 : 6));  // 6: Move 6 is rejected
      a.label = (a.move == Move::Out || a.move == Move::Missing) ? 0 : pick_label(in, labels);
    }
    const int n_neg = in.u8() % 3;
    for (int i = 0; i < n_neg; ++i) {
      const std::int32_t start = static_cast<std::int8_t>(in.u8());
      const std::int32_t end = start + static_cast<std::int8_t>(in.u8()) % 4;
      g.negatives.push_back({start, end, pick_label(in, labels)});
    }
    golds.push_back(std::move(g));
  }
  return golds;
}

void check_parses(const BeamBatch& batch, const TransitionSystem& system) {
  for (int d = 0; d < batch.n_docs(); ++d) {
    const std::vector<Parse> parses = batch.parses(d);
    FUZZ_CHECK(!parses.empty());
    FUZZ_CHECK(static_cast<int>(parses.size()) <= batch.options().width);
    const std::int32_t length = batch.docs().length(d);
    double total = 0.0;
    for (const Parse& p : parses) {
      FUZZ_CHECK(std::isfinite(p.score));
      FUZZ_CHECK(std::isfinite(p.probability) && p.probability >= 0.0 && p.probability <= 1.0);
      total += p.probability;
      FUZZ_CHECK(static_cast<std::int64_t>(p.history.size()) <= length);
      if (batch.is_done()) FUZZ_CHECK(static_cast<std::int64_t>(p.history.size()) == length);
      for (std::int32_t c : p.history) FUZZ_CHECK(c >= 0 && c < system.n_actions());
      for (const Entity& e : p.entities) {
        FUZZ_CHECK(e.start >= 0 && e.start < e.end && e.end <= length);
      }
    }
    FUZZ_CHECK(std::fabs(total - 1.0) < 1e-6);
    for (const auto& [e, prob] : batch.entity_probabilities(d)) {
      FUZZ_CHECK(e.start >= 0 && e.end <= length);
      // 0 is possible: exp underflows for parses far below the best.
      FUZZ_CHECK(std::isfinite(prob) && prob >= 0.0 && prob <= 1.0 + 1e-6);
    }
  }
}

// Steps a batch with score matrices from the input, some of the wrong shape.
void drive_advance(Reader& in, BeamBatch& batch, const TransitionSystem& system, bool has_golds) {
  const std::int64_t n_tokens = batch.docs().n_tokens();
  for (int step = 0; step < 5000 && !batch.is_done(); ++step) {
    const std::int64_t n = batch.n_unfinished();
    FUZZ_CHECK(n > 0);
    const auto cells = static_cast<std::size_t>(n) * static_cast<std::size_t>(system.n_actions());
    std::vector<std::int32_t> context(static_cast<std::size_t>(n) * kNumContextFeatures);
    batch.context_tokens(context.data());
    for (std::int32_t id : context) FUZZ_CHECK(id >= -1 && id < n_tokens);
    std::vector<std::uint8_t> valid(cells);
    batch.valid_actions(valid.data());
    if (has_golds) {
      std::vector<float> costs(cells);
      batch.costs(costs.data());
      // follow_gold also masks valid actions that cost more than the cheapest
      // (spaCy's _set_costs), keeping their real costs.
      if (!batch.options().follow_gold) {
        for (std::size_t i = 0; i < cells; ++i) FUZZ_CHECK(valid[i] || costs[i] == kInvalidCost);
      }
    }
    const std::uint8_t shape = in.u8();
    std::int64_t rows = n;
    std::int64_t cols = system.n_actions();
    if (shape >= 240) {
      rows += static_cast<std::int8_t>(in.u8()) % 3;
      cols += static_cast<std::int8_t>(in.u8()) % 3;
      if (shape == 255) rows = std::int64_t{1} << 40;  // a shape no buffer backs
    }
    const bool exact = rows == n && cols == system.n_actions();
    // A wrong shape gets a one-float buffer: the engine must reject it unread.
    std::vector<float> scores(exact ? cells : 1);
    const int mode = shape % 16 == 15 ? 1 : 0;
    for (float& s : scores) s = score_value(in, mode);
    const int steps_before = batch.n_steps();
    try {
      batch.advance(scores.data(), rows, cols);
    } catch (const std::invalid_argument&) {
      // Rejected: nothing changed, and the batch goes on with clean scores.
      FUZZ_CHECK(batch.n_steps() == steps_before && batch.n_unfinished() == n);
      std::vector<float> clean(cells);
      for (float& s : clean) s = score_value(in, 0);
      try {
        batch.advance(clean.data(), n, system.n_actions());
      } catch (const std::invalid_argument&) {
        // Inconsistent presets: no document may get past this token.
        FUZZ_CHECK(batch.n_steps() == steps_before);
        return;
      }
    }
  }
}

class InputScorer final : public Scorer {
 public:
  InputScorer(Reader& in, int n_classes, int mode) : in_(in), n_classes_(n_classes), mode_(mode) {}
  void score(const std::int32_t*, std::int64_t n_states, float* scores) override {
    for (std::int64_t i = 0; i < n_states * n_classes_; ++i) scores[i] = score_value(in_, mode_);
  }
  int n_classes() const override { return n_classes_; }

 private:
  Reader& in_;
  int n_classes_;
  int mode_;
};

void drive_precomputed(Reader& in, BeamBatch& batch, const TransitionSystem& system) {
  PrecomputedModel m;
  m.nF = in.u8() % 8 == 0 ? 2 : kNumContextFeatures;
  m.nO = 1 + in.u8() % 4;
  m.nP = 1 + in.u8() % 3;
  const bool upper = in.u8() % 2 == 0;
  m.n_classes = upper ? system.n_actions() + (in.u8() % 16 == 0 ? 1 : 0) : m.nO;
  m.n_rows = batch.docs().n_tokens() + 1 - (in.u8() % 16 == 0 ? 1 : 0);
  const int mode = in.u8() % 4 == 0 ? 1 : 0;
  std::vector<float> features(static_cast<std::size_t>(std::max<std::int64_t>(m.n_rows, 0)) *
                              static_cast<std::size_t>(m.nF * m.nO * m.nP));
  for (float& f : features) f = score_value(in, mode);
  std::vector<float> bias(static_cast<std::size_t>(m.nO * m.nP));
  for (float& f : bias) f = score_value(in, 0);
  std::vector<float> W(static_cast<std::size_t>(m.n_classes * m.nO));
  std::vector<float> b(static_cast<std::size_t>(m.n_classes));
  std::vector<float> mask(static_cast<std::size_t>(m.n_classes));
  for (float& f : W) f = score_value(in, 0);
  for (float& f : b) f = score_value(in, 0);
  for (float& f : mask) f = in.u8() % 4 == 0 ? 0.0f : 1.0f;
  m.features = features.data();
  m.lower_bias = bias.data();
  if (upper) {
    m.upper_W = W.data();
    m.upper_b = b.data();
  }
  if (in.u8() % 2 == 0) m.class_mask = mask.data();
  PrecomputedScorer scorer(m);
  batch.run(scorer);
}

// spaCy's trace-like walk: from each document's initial state, take the
// input's action when valid, else the first valid one; check context tokens,
// costs and the entities of the resulting history.
void walk(Reader& in, const TransitionSystem& system, const DocBatch& docs,
          const std::vector<Gold>& golds) {
  const auto n_actions = static_cast<std::size_t>(system.n_actions());
  std::vector<std::uint8_t> valid(n_actions);
  std::vector<float> costs(n_actions);
  for (int d = 0; d < docs.n_docs(); ++d) {
    const std::int32_t length = docs.length(d);
    const bool gold_ok =
        !golds.empty() &&
        static_cast<std::int64_t>(golds[static_cast<std::size_t>(d)].ner.size()) == length;
    State state = State::initial(length);
    std::vector<std::int32_t> history;
    while (!state.is_final()) {
      if (gold_ok) {
        system.set_costs(state, docs.tokens(d), golds[static_cast<std::size_t>(d)], valid.data(),
                         costs.data());
      } else {
        system.set_valid(state, docs.tokens(d), valid.data());
      }
      std::int32_t ids[kNumContextFeatures];
      state.context_tokens(ids, docs.offset(d));
      for (std::int32_t id : ids) FUZZ_CHECK(id >= -1 && id < docs.n_tokens());
      int clas = in.u8() % static_cast<int>(n_actions);
      if (!valid[static_cast<std::size_t>(clas)]) {
        const auto it = std::find(valid.begin(), valid.end(), std::uint8_t{1});
        if (it == valid.end()) break;  // inconsistent presets: a dead end
        clas = static_cast<int>(it - valid.begin());
      }
      FUZZ_CHECK(system.is_valid(state, docs.tokens(d), clas));
      const std::int32_t pos = state.pos;
      system.apply(state, clas);
      FUZZ_CHECK(state.pos == pos + 1);
      history.push_back(clas);
    }
    for (const Entity& e : system.entities(history.data(), history.size(), length)) {
      FUZZ_CHECK(e.start >= 0 && e.start < e.end && e.end <= length);
    }
    // Any in-range history, valid or not, replays without going out of bounds.
    std::vector<std::int32_t> junk(in.u8() % 32);
    for (std::int32_t& c : junk) c = in.u8() % static_cast<int>(n_actions);
    system.entities(junk.data(), junk.size(), static_cast<std::int32_t>(in.u8() % 40) - 4);
  }
}

void run_one(Reader& in) {
  std::vector<label_t> labels;
  const TransitionSystem system = make_system(in, labels);
  const std::uint16_t w = in.u16();
  const int width = w >= 0xFFF0 ? static_cast<int>(static_cast<std::int16_t>(w)) : 1 + w % 1024;
  float density;
  const std::uint8_t dkind = in.u8();
  if (dkind < 128) {
    density = 0.0f;
  } else if (dkind < 200) {
    density = static_cast<float>(in.u8()) / 255.0f;
  } else if (dkind < 220) {
    density = 1.0f;
  } else {
    density = in.raw_f32();  // NaN, negative, > 1: rejected
  }
  std::vector<std::int32_t> lengths;
  const DocBatch docs = make_docs(in, labels, std::max(width, 1), lengths);
  const std::vector<Gold> golds = make_golds(in, lengths, labels);
  const std::uint8_t op = in.u8();
  if (op % 8 == 7) {
    walk(in, system, docs, golds);
    return;
  }
  BeamOptions options;
  options.width = width;
  options.density = density;
  options.follow_gold = !golds.empty() && (op & 8) != 0;
  BeamBatch batch(system, docs, options, golds);
  try {
    if (op % 8 < 5) {
      drive_advance(in, batch, system, !golds.empty());
    } else if (op % 8 == 5) {
      InputScorer scorer(in, system.n_actions() + (in.u8() % 32 == 0 ? 1 : 0), op >> 7);
      batch.run(scorer);
    } else {
      drive_precomputed(in, batch, system);
    }
  } catch (const std::logic_error&) {
    // Rejected midway: the batch must still answer consistently.
  }
  check_parses(batch, system);
  if (in.u8() % 4 == 0) {
    try {
      batch.parses(batch.n_docs() + in.u8() % 3);
      FUZZ_CHECK(false && "parses past the last document must throw");
    } catch (const std::out_of_range&) {
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Reader in(data, size);
  try {
    run_one(in);
  } catch (const std::invalid_argument&) {
  } catch (const std::out_of_range&) {
  } catch (const std::logic_error&) {
    // "costs need golds" and other documented misuse
  }
  return 0;
}
