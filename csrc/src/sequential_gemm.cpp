// The kernels of sequential_gemm.hpp. One register-blocked loop, written with
// GCC/Clang vector extensions, is inlined into an entry function per
// instruction set; the x86 ones carry target attributes and are picked at run
// time, so the package itself stays baseline x86-64. This file must build with
// -ffp-contract=off (CMakeLists.txt): an FMA would round differently.
#include "sequential_gemm.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

#if defined(__GNUC__)  // GCC and Clang
#define BEAMNER_GEMM_VECTORS 1
#else
#define BEAMNER_GEMM_VECTORS 0
#endif
#if BEAMNER_GEMM_VECTORS && (defined(__x86_64__) || defined(__i386__))
#define BEAMNER_GEMM_X86 1
#else
#define BEAMNER_GEMM_X86 0
#endif

namespace beamner {

namespace {

// Packed rows are padded to the widest vector (AVX-512) so every level loads whole vectors.
constexpr int kPackColumns = 16;

void gemm_scalar(const float* a, std::int64_t m, const float* packed_b, int n, int k,
                 const float* bias, float* c) {
  const int ldb = gemm_packed_stride(n);
  for (std::int64_t i = 0; i < m; ++i) {
    const float* a_row = a + i * k;
    for (int j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int l = 0; l < k; ++l)
        sum += a_row[l] * packed_b[static_cast<std::int64_t>(l) * ldb + j];
      c[i * n + j] = bias != nullptr ? sum + bias[j] : sum;
    }
  }
}

#if BEAMNER_GEMM_VECTORS
typedef float Vec4 __attribute__((vector_size(16)));
typedef float Vec8 __attribute__((vector_size(32)));
typedef float Vec16 __attribute__((vector_size(64)));

// C in blocks of MR rows x NV vectors, each block's accumulators held in
// registers for the whole k loop: MR * NV independent add chains hide the
// add latency. Edge blocks repeat their last row / vector (cheaper than more
// instantiations) and store only what is inside C. Always inlined, so it is
// compiled for the instruction set of the entry function that calls it.
template <class V, int MR, int NV>
[[gnu::always_inline]] inline void gemm_blocked(const float* a, std::int64_t m,
                                                const float* packed_b, int n, int k,
                                                const float* bias, float* c) {
  constexpr int kLanes = static_cast<int>(sizeof(V) / sizeof(float));
  const std::int64_t ldb = gemm_packed_stride(n);
  for (int j0 = 0; j0 < n; j0 += NV * kLanes) {
    const int cols = std::min(NV * kLanes, n - j0);
    const int n_vectors = (cols + kLanes - 1) / kLanes;
    const float* b_vectors[NV];
    for (int v = 0; v < NV; ++v) b_vectors[v] = packed_b + j0 + std::min(v, n_vectors - 1) * kLanes;
    for (std::int64_t i0 = 0; i0 < m; i0 += MR) {
      const int rows = static_cast<int>(std::min<std::int64_t>(MR, m - i0));
      const float* a_rows[MR];
      for (int r = 0; r < MR; ++r) a_rows[r] = a + (i0 + std::min(r, rows - 1)) * k;

      V acc[MR][NV];
      for (int r = 0; r < MR; ++r) {
        for (int v = 0; v < NV; ++v) acc[r][v] = V{};  // +0.0f, as blis starts
      }
      for (int l = 0; l < k; ++l) {
        V b_l[NV];
        for (int v = 0; v < NV; ++v) std::memcpy(&b_l[v], b_vectors[v] + l * ldb, sizeof(V));
        for (int r = 0; r < MR; ++r) {
          const float a_rl = a_rows[r][l];
          for (int v = 0; v < NV; ++v) {
            const V product = a_rl * b_l[v];
            acc[r][v] = acc[r][v] + product;
          }
        }
      }

      for (int r = 0; r < rows; ++r) {
        float* c_row = c + (i0 + r) * n + j0;
        for (int v = 0; v < n_vectors; ++v) {
          const int j = v * kLanes;
          V out = acc[r][v];
          if (j + kLanes <= cols) {
            if (bias != nullptr) {
              V bias_v;
              std::memcpy(&bias_v, bias + j0 + j, sizeof(V));
              out = out + bias_v;
            }
            std::memcpy(c_row + j, &out, sizeof(V));
          } else {
            float lanes[kLanes];
            std::memcpy(lanes, &out, sizeof(V));
            for (int t = 0; j + t < cols; ++t) {
              c_row[j + t] = bias != nullptr ? lanes[t] + bias[j0 + j + t] : lanes[t];
            }
          }
        }
      }
    }
  }
}

void gemm_vector128(const float* a, std::int64_t m, const float* packed_b, int n, int k,
                    const float* bias, float* c) {
  gemm_blocked<Vec4, 4, 2>(a, m, packed_b, n, k, bias, c);
}
#endif

#if BEAMNER_GEMM_X86
// 16 ymm registers: 8 accumulators, 2 B vectors, the broadcast and a product.
__attribute__((target("avx"))) void gemm_avx(const float* a, std::int64_t m, const float* packed_b,
                                             int n, int k, const float* bias, float* c) {
  gemm_blocked<Vec8, 4, 2>(a, m, packed_b, n, k, bias, c);
}

// 32 zmm registers: 20 accumulators, 5 B vectors (80 columns: spaCy's 74 NER
// classes in one pass), the broadcast and a product.
__attribute__((target("avx512f"))) void gemm_avx512(const float* a, std::int64_t m,
                                                    const float* packed_b, int n, int k,
                                                    const float* bias, float* c) {
  gemm_blocked<Vec16, 4, 5>(a, m, packed_b, n, k, bias, c);
}
#endif

}  // namespace

const char* gemm_level_name(GemmLevel level) {
  switch (level) {
    case GemmLevel::kScalar:
      return "scalar";
    case GemmLevel::kVector128:
      return "vector128";
    case GemmLevel::kAvx:
      return "avx";
    case GemmLevel::kAvx512:
      return "avx512";
  }
  return "unknown";
}

const std::vector<GemmLevel>& supported_gemm_levels() {
  static const std::vector<GemmLevel> levels = [] {
    std::vector<GemmLevel> out{GemmLevel::kScalar};
#if BEAMNER_GEMM_VECTORS
    out.push_back(GemmLevel::kVector128);
#endif
#if BEAMNER_GEMM_X86
    // Also checks that the OS saves the wider registers (XGETBV).
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx")) out.push_back(GemmLevel::kAvx);
    if (__builtin_cpu_supports("avx") && __builtin_cpu_supports("avx512f")) {
      out.push_back(GemmLevel::kAvx512);
    }
#endif
    return out;
  }();
  return levels;
}

int gemm_packed_stride(int n) { return (n + kPackColumns - 1) / kPackColumns * kPackColumns; }

std::vector<float> pack_gemm_rhs(const float* b, int n, int k) {
  const std::int64_t ldb = gemm_packed_stride(n);
  std::vector<float> packed(static_cast<std::size_t>(k * ldb), 0.0f);
  for (std::int64_t j = 0; j < n; ++j) {
    for (std::int64_t l = 0; l < k; ++l)
      packed[static_cast<std::size_t>(l * ldb + j)] = b[j * k + l];
  }
  return packed;
}

SequentialGemmFn sequential_gemm(GemmLevel level) {
  const std::vector<GemmLevel>& supported = supported_gemm_levels();
  if (std::find(supported.begin(), supported.end(), level) == supported.end()) {
    throw std::invalid_argument(std::string("GEMM level ") + gemm_level_name(level) +
                                " is not supported by this build or CPU");
  }
  switch (level) {
#if BEAMNER_GEMM_VECTORS
    case GemmLevel::kVector128:
      return &gemm_vector128;
#endif
#if BEAMNER_GEMM_X86
    case GemmLevel::kAvx:
      return &gemm_avx;
    case GemmLevel::kAvx512:
      return &gemm_avx512;
#endif
    default:
      return &gemm_scalar;
  }
}

}  // namespace beamner
