#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "beamner/scorer.hpp"
#include "beamner/types.hpp"
#include "catch_compat.hpp"
#include "sequential_gemm.hpp"

using namespace beamner;

namespace {

// blis' reference microkernel, one output at a time: +0.0f, then each
// product rounded to float and added in order of l (no FMA: this file is
// built with -ffp-contract=off like the engine).
std::vector<float> reference_gemm(const std::vector<float>& a, const std::vector<float>& b, int m,
                                  int n, int k) {
  std::vector<float> c(static_cast<std::size_t>(m) * static_cast<std::size_t>(n));
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int l = 0; l < k; ++l) {
        const float product =
            a[static_cast<std::size_t>(i * k + l)] * b[static_cast<std::size_t>(j * k + l)];
        sum = sum + product;
      }
      c[static_cast<std::size_t>(i * n + j)] = sum;
    }
  }
  return c;
}

// Values of every sign and a wide range of magnitudes, with exact and
// negative zeros: any other rounding or order of the sums shows in the bits.
std::vector<float> random_matrix(std::mt19937& rng, int rows, int cols) {
  std::uniform_int_distribution<int> kind(0, 15);
  std::uniform_int_distribution<int> exponent(-30, 30);
  std::uniform_real_distribution<float> mantissa(1.0f, 2.0f);
  std::vector<float> out(static_cast<std::size_t>(rows) * static_cast<std::size_t>(cols));
  for (float& x : out) {
    const int what = kind(rng);
    if (what == 0) {
      x = 0.0f;
    } else if (what == 1) {
      x = -0.0f;
    } else {
      x = std::ldexp(what % 2 == 0 ? mantissa(rng) : -mantissa(rng), exponent(rng));
    }
  }
  return out;
}

bool same_bits(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("sequential GEMM: scalar and vector128 levels always exist, slowest first") {
  const std::vector<GemmLevel>& levels = supported_gemm_levels();
  REQUIRE(!levels.empty());
  CHECK(levels.front() == GemmLevel::kScalar);
  for (std::size_t i = 1; i < levels.size(); ++i) {
    CHECK(static_cast<int>(levels[i - 1]) < static_cast<int>(levels[i]));
  }
#if defined(__GNUC__)
  CHECK(levels.size() >= 2);
#endif
  CHECK(std::string(gemm_level_name(GemmLevel::kAvx512)) == "avx512");
}

TEST_CASE("sequential GEMM: packing transposes and zero-pads B") {
  const std::vector<float> b{1, 2, 3, 4, 5, 6};  // n = 2, k = 3
  CHECK(gemm_packed_stride(2) == 16);
  CHECK(gemm_packed_stride(16) == 16);
  CHECK(gemm_packed_stride(17) == 32);
  const std::vector<float> packed = pack_gemm_rhs(b.data(), 2, 3);
  REQUIRE(packed.size() == 3 * 16);
  CHECK(packed[0] == 1);
  CHECK(packed[1] == 4);
  CHECK(packed[16] == 2);
  CHECK(packed[17] == 5);
  CHECK(packed[32] == 3);
  CHECK(packed[33] == 6);
  CHECK(packed[2] == 0);
  CHECK(packed[47] == 0);
}

TEST_CASE("sequential GEMM: bit for bit the reference arithmetic at every level") {
  std::mt19937 rng(20240611);
  std::vector<std::array<int, 3>> shapes;  // m, n, k
  for (int m : {1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 31, 37}) {
    for (int n : {1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 63, 74, 79, 80, 81, 97, 128, 150}) {
      for (int k : {1, 2, 3, 5, 16, 63, 64, 65, 130}) shapes.push_back({m, n, k});
    }
  }
  std::uniform_int_distribution<int> any_m(1, 37), any_n(1, 150), any_k(1, 130);
  for (int i = 0; i < 200; ++i) shapes.push_back({any_m(rng), any_n(rng), any_k(rng)});

  for (GemmLevel level : supported_gemm_levels()) {
    const SequentialGemmFn gemm = sequential_gemm(level);
    for (const auto& [m, n, k] : shapes) {
      const std::vector<float> a = random_matrix(rng, m, k);
      const std::vector<float> b = random_matrix(rng, n, k);
      const std::vector<float> bias = random_matrix(rng, 1, n);
      const std::vector<float> packed = pack_gemm_rhs(b.data(), n, k);
      const std::vector<float> expected = reference_gemm(a, b, m, n, k);
      // A sentinel after C catches writes past its end.
      std::vector<float> c(static_cast<std::size_t>(m * n) + 1, 12345.0f);
      gemm(a.data(), m, packed.data(), n, k, nullptr, c.data());
      INFO("level " << gemm_level_name(level) << ", m " << m << ", n " << n << ", k " << k);
      CHECK(c.back() == 12345.0f);
      c.pop_back();
      REQUIRE(same_bits(c, expected));

      // With a bias: the same as adding it in a second pass.
      std::vector<float> with_bias = expected;
      for (int r = 0; r < m; ++r) {
        for (int j = 0; j < n; ++j) with_bias[static_cast<std::size_t>(r * n + j)] += bias[j];
      }
      gemm(a.data(), m, packed.data(), n, k, bias.data(), c.data());
      REQUIRE(same_bits(c, with_bias));
    }
  }
}

TEST_CASE("sequential GEMM: zero rows write nothing, k = 0 gives +0 (plus the bias)") {
  for (GemmLevel level : supported_gemm_levels()) {
    const SequentialGemmFn gemm = sequential_gemm(level);
    const std::vector<float> unread(16, 1.0f);
    std::vector<float> c(10, 7.0f);
    gemm(unread.data(), 0, unread.data(), 5, 0, nullptr, c.data());
    CHECK(c == std::vector<float>(10, 7.0f));
    gemm(unread.data(), 2, unread.data(), 5, 0, nullptr, c.data());
    for (float x : c) CHECK((x == 0.0f && !std::signbit(x)));
  }
}

TEST_CASE("sequential GEMM: special values propagate as in the reference") {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> a{inf, 1.0f, -0.0f, 3.0f, 1e30f, 1e30f};  // m = 2, k = 3
  const std::vector<float> b{0.0f, 1.0f, 2.0f, 1.0f, -1.0f, -0.0f, 1e20f, 1e20f, 1.0f};  // n = 3
  const std::vector<float> expected = reference_gemm(a, b, 2, 3, 3);
  CHECK(std::isnan(expected[0]));  // inf * 0
  for (GemmLevel level : supported_gemm_levels()) {
    const std::vector<float> packed = pack_gemm_rhs(b.data(), 3, 3);
    std::vector<float> c(6);
    sequential_gemm(level)(a.data(), 2, packed.data(), 3, 3, nullptr, c.data());
    INFO("level " << gemm_level_name(level));
    for (std::size_t i = 0; i < c.size(); ++i) {
      if (std::isnan(expected[i])) {
        CHECK(std::isnan(c[i]));
      } else {
        CHECK(std::memcmp(&c[i], &expected[i], sizeof(float)) == 0);
      }
    }
  }
}

namespace {

// Stand-ins for blis' sgemm (row-major, A not transposed, B transposed).
int g_corrupt_next_calls = 0;
int g_reference_calls = 0;

void reference_sgemm(int, int, int m, int n, int k, float alpha, const float* a, int lda,
                     const float* b, int ldb, float, float* c, int ldc) {
  ++g_reference_calls;
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int l = 0; l < k; ++l) sum = sum + a[i * lda + l] * b[j * ldb + l];
      c[i * ldc + j] = alpha * sum;
    }
  }
  if (g_corrupt_next_calls > 0) {
    --g_corrupt_next_calls;
    c[0] = std::nextafter(c[0], std::numeric_limits<float>::infinity());
  }
}

// A GEMM with fused multiply-adds, as blis uses on CPUs it recognises.
void fma_sgemm(int, int, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
               int ldb, float, float* c, int ldc) {
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int l = 0; l < k; ++l) sum = std::fma(a[i * lda + l], b[j * ldb + l], sum);
      c[i * ldc + j] = alpha * sum;
    }
  }
}

struct RandomModel {
  RandomModel(int n_tokens, int nO, int nP, int n_classes) {
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    features.resize(static_cast<std::size_t>((n_tokens + 1) * kNumContextFeatures * nO * nP));
    for (float& x : features) x = normal(rng);
    lower_bias.resize(static_cast<std::size_t>(nO * nP));
    for (float& x : lower_bias) x = normal(rng);
    upper_W.resize(static_cast<std::size_t>(n_classes * nO));
    for (float& x : upper_W) x = 0.1f * normal(rng);
    upper_b.resize(static_cast<std::size_t>(n_classes));
    for (float& x : upper_b) x = normal(rng);
    model.features = features.data();
    model.n_rows = n_tokens + 1;
    model.nF = kNumContextFeatures;
    model.nO = nO;
    model.nP = nP;
    model.lower_bias = lower_bias.data();
    model.upper_W = upper_W.data();
    model.upper_b = upper_b.data();
    model.n_classes = n_classes;
  }
  std::vector<float> features, lower_bias, upper_W, upper_b;
  PrecomputedModel model;
};

std::vector<float> score_all(PrecomputedScorer& scorer, int n_tokens, int n_states) {
  std::vector<std::int32_t> context(static_cast<std::size_t>(n_states * kNumContextFeatures));
  for (std::size_t i = 0; i < context.size(); ++i) {
    context[i] = static_cast<std::int32_t>((i * 7919) % static_cast<std::size_t>(n_tokens + 1)) - 1;
  }
  std::vector<float> scores(static_cast<std::size_t>(n_states * scorer.n_classes()));
  scorer.score(context.data(), n_states, scores.data());
  return scores;
}

}  // namespace

TEST_CASE("PrecomputedScorer picks the sequential GEMM only where it matches the sgemm") {
  for (int nP : {1, 2, 3}) {
    const RandomModel m(50, 64, nP, 74);
    PrecomputedModel model = m.model;
    INFO("nP " << nP);

    model.sgemm = &reference_sgemm;
    PrecomputedScorer sequential(model);
    CHECK(std::string(sequential.gemm_name()) ==
          std::string("sequential-") + gemm_level_name(supported_gemm_levels().back()));
    g_corrupt_next_calls = 1;  // the probe disagrees: the scorer keeps calling the sgemm
    PrecomputedScorer reference(model);
    CHECK(std::string(reference.gemm_name()) == "blis");

    for (int n_states : {1, 3, 4, 37, 200}) {
      g_reference_calls = 0;
      const std::vector<float> got = score_all(sequential, 50, n_states);
      CHECK(g_reference_calls == 0);
      const std::vector<float> expected = score_all(reference, 50, n_states);
      CHECK(g_reference_calls == 1);
      REQUIRE(same_bits(got, expected));
    }

    model.sgemm = &fma_sgemm;
    CHECK(std::string(PrecomputedScorer(model).gemm_name()) == "blis");
    model.sgemm = nullptr;
    CHECK(std::string(PrecomputedScorer(model).gemm_name()) == "cblas");
    model.upper_W = nullptr;
    model.upper_b = nullptr;
    model.n_classes = model.nO;
    CHECK(std::string(PrecomputedScorer(model).gemm_name()) == "none");
  }
}
