// The kernel of log_softmax.hpp. exp is a table-and-polynomial written with
// GCC/Clang vector extensions so that it vectorises without -ffast-math
// (which the engine may not use); the x86 AVX2+FMA entry carries a target
// attribute and is picked at run time, the package itself stays baseline
// x86-64. Every entry adds the exponentials in the same order (four running
// sums, element p of a row's valid scores into sum p % 4, then
// (s0 + s1) + (s2 + s3)); the AVX2 entry fuses the polynomial's multiply-adds,
// so its log-sum-exp may differ from the baseline's in the last bit of the
// double (both within a few ulp of the exact value; the float32 results then
// agree but where the double lands on a float32 rounding boundary). These
// scores need not match any of spaCy's: none mode never comes here.
#include "log_softmax.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#if defined(__GNUC__)  // GCC and Clang
#define BEAMNER_SOFTMAX_VECTORS 1
#else
#define BEAMNER_SOFTMAX_VECTORS 0
#endif
#if BEAMNER_SOFTMAX_VECTORS && defined(__x86_64__)
#define BEAMNER_SOFTMAX_X86 1
#include <immintrin.h>
#else
#define BEAMNER_SOFTMAX_X86 0
#endif

#if defined(__GNUC__) && !defined(__clang__)
// Every function taking or returning a 32-byte vector here is inlined into
// its AVX2 caller, so GCC's note that such a call's ABI changed is moot.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace beamner {
namespace {

// exp(x) = 2^(n / 256) * exp(r): n = round(256 x / ln 2), r = x - n ln 2 / 256
// in [-0.0014, 0.0014] (Cody-Waite: ln 2 / 256 in two parts, the first exact
// times any n used here), 2^(n / 256) from a table of 2^(j / 256) with the
// integer part of n / 256 added to the exponent, exp(r) by its Taylor series
// to r^4 / 4! (truncation below 4e-17). Arguments below -708 are taken as
// -708 (exp(-708) ~ 3e-308: nothing next to a sum that is at least 1).
constexpr int kTableBits = 8;
constexpr int kTableSize = 1 << kTableBits;
constexpr double kScale = kTableSize * 1.4426950408889634;          // 256 / ln 2
constexpr double kLn2Hi = 6.93147180369123816490e-01 / kTableSize;  // 32 significant bits
constexpr double kLn2Lo = 1.90821492927058770002e-10 / kTableSize;
constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
constexpr std::int64_t kShifterBits = 0x4338000000000000LL;
constexpr double kMinArg = -708.0;
constexpr float kPad = -std::numeric_limits<float>::infinity();  // pads a row's valid scores
constexpr int kSums = 4;
constexpr int kPackBlock = 8;  // the AVX2 packer stores 8 floats at a time

struct PowTable {
  std::int64_t bits[kTableSize];  ///< 2^(j / 256), as bits
  PowTable() {
    for (int j = 0; j < kTableSize; ++j) {
      const double v = std::exp2(static_cast<double>(j) / kTableSize);
      std::memcpy(&bits[j], &v, sizeof v);
    }
  }
};
const PowTable kPow2;

#if BEAMNER_SOFTMAX_VECTORS
typedef double Vd2 __attribute__((vector_size(16)));
typedef long long Vi2 __attribute__((vector_size(16)));
typedef float Vf2 __attribute__((vector_size(8)));
typedef double Vd4 __attribute__((vector_size(32)));
typedef long long Vi4 __attribute__((vector_size(32)));
typedef float Vf4 __attribute__((vector_size(16)));

// Table lookups, out[l] = bits of 2^(j[l] / 256) (vectors by reference: a
// 32-byte vector by value would change the ABI).
template <class VI>
[[gnu::always_inline]] inline void table_bits(const VI& j, VI& out) {
  for (int l = 0; l < static_cast<int>(sizeof(VI) / sizeof(long long)); ++l) {
    out[l] = kPow2.bits[j[l]];
  }
}

// out = a * b + c, rounded twice (the baseline's arithmetic). The multiply-adds
// write through a reference rather than return: a 32-byte vector returned by a
// function without an AVX target attribute changes the ABI (Clang rejects it).
struct MulAdd {
  template <class VD>
  [[gnu::always_inline]] void operator()(const VD& a, const VD& b, const VD& c, VD& out) const {
    out = a * b + c;
  }
};

// In place; fma(a, b, c, out) sets out = a * b + c, fused or not.
template <class VD, class VI, class Gather, class Fma>
[[gnu::always_inline]] inline void exp_vector(VD& x, Gather gather, Fma fma) {
  const VD min_arg = VD{} + kMinArg;
  x = x < min_arg ? min_arg : x;
  VD t;
  fma(x, VD{} + kScale, VD{} + kShifter, t);
  const VD n = t - kShifter;
  VD hi;
  fma(n, VD{} - kLn2Hi, x, hi);
  VD r;
  fma(n, VD{} - kLn2Lo, hi, r);
  VD p;
  fma(r, VD{} + (1.0 / 24.0), VD{} + (1.0 / 6.0), p);
  fma(p, r, VD{} + 0.5, p);
  fma(p, r, VD{} + 1.0, p);
  fma(p, r, VD{} + 1.0, p);
  VI bits;
  std::memcpy(&bits, &t, sizeof bits);
  const VI n_int = bits - kShifterBits;
  VI scale_bits;
  gather(n_int & (kTableSize - 1), scale_bits);
  scale_bits += (n_int >> kTableBits) << 52;
  VD scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  x = p * scale;
}

// Sum of exp(packed[p] - max_) over p < n (n a multiple of kSums).
template <class VD, class VI, class VF, class Gather, class Fma>
[[gnu::always_inline]] inline double sum_exp(const float* packed, std::int64_t n, double max_,
                                             Gather gather, Fma fma) {
  constexpr int kLanes = static_cast<int>(sizeof(VD) / sizeof(double));
  constexpr int kVectors = kSums / kLanes;
  static_assert(kSums % kLanes == 0, "the running sums must fill whole vectors");
  VD acc[kVectors];
  for (int v = 0; v < kVectors; ++v) acc[v] = VD{};
  for (std::int64_t p = 0; p < n; p += kSums) {
    for (int v = 0; v < kVectors; ++v) {
      VF f;
      std::memcpy(&f, packed + p + v * kLanes, sizeof f);
      VD x = __builtin_convertvector(f, VD) - max_;
      exp_vector<VD, VI>(x, gather, fma);
      acc[v] += x;
    }
  }
  double s[kSums];
  std::memcpy(s, acc, sizeof s);
  return (s[0] + s[1]) + (s[2] + s[3]);
}
#endif

// The maximum of packed[0, n), n a multiple of kSums (exact in any order).
inline float max_of(const float* packed, std::int64_t n) {
#if BEAMNER_SOFTMAX_VECTORS
  Vf4 m;
  std::memcpy(&m, packed, sizeof m);
  for (std::int64_t p = kSums; p < n; p += kSums) {
    Vf4 v;
    std::memcpy(&v, packed + p, sizeof v);
    m = v > m ? v : m;
  }
  const float a = m[0] > m[1] ? m[0] : m[1];
  const float b = m[2] > m[3] ? m[2] : m[3];
  return a > b ? a : b;
#else
  float m = packed[0];
  for (std::int64_t p = 1; p < n; ++p) m = packed[p] > m ? packed[p] : m;
  return m;
#endif
}

#if BEAMNER_SOFTMAX_VECTORS
// out[i] = exp(double(x[i]) - shift), whole vectors then one lane at a time.
template <class VD, class VI, class VF, class Gather, class Fma>
[[gnu::always_inline]] inline void exps_impl(const float* x, std::int64_t n, double shift,
                                             double* out, Gather gather, Fma fma) {
  constexpr int kLanes = static_cast<int>(sizeof(VD) / sizeof(double));
  std::int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    VF f;
    std::memcpy(&f, x + i, sizeof f);
    VD v = __builtin_convertvector(f, VD) - shift;
    exp_vector<VD, VI>(v, gather, fma);
    std::memcpy(out + i, &v, sizeof v);
  }
  for (; i < n; ++i) {
    VD v = VD{} + (static_cast<double>(x[i]) - shift);
    exp_vector<VD, VI>(v, gather, fma);
    out[i] = v[0];
  }
}
#endif

// The valid scores of a row, packed (branchless: every cell is stored, the
// count advances only for valid ones); returns their number.
inline std::int64_t pack_scalar(const float* x, const std::uint8_t* valid, std::int64_t n,
                                float* packed) {
  std::int64_t k = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    packed[k] = x[j];
    k += valid[j] != 0;
  }
  return k;
}

template <class Pack, class SumExp>
[[gnu::always_inline]] inline void rows_impl(const float* x, const std::uint8_t* valid,
                                             std::int64_t n_rows, std::int64_t n_cols, float* out,
                                             float* packed, Pack pack, SumExp sum_exp_fn) {
  for (std::int64_t i = 0; i < n_rows; ++i) {
    const float* xr = x + i * n_cols;
    float* o = out + i * n_cols;
    const std::int64_t k = pack(xr, valid + i * n_cols, n_cols, packed);
    if (k == 0) {
      std::fill(o, o + n_cols, 0.0f);
      continue;
    }
    const std::int64_t padded = (k + kSums - 1) / kSums * kSums;
    std::fill(packed + k, packed + padded, kPad);
    const double max_ = static_cast<double>(max_of(packed, padded));
    const double lse = max_ + std::log(sum_exp_fn(packed, padded, max_));
    for (std::int64_t j = 0; j < n_cols; ++j) {
      o[j] = static_cast<float>(static_cast<double>(xr[j]) - lse);
    }
  }
}

using RowsFn = void (*)(const float*, const std::uint8_t*, std::int64_t, std::int64_t, float*,
                        float*);
using ExpsFn = void (*)(const float*, std::int64_t, double, double*);

void exps_baseline(const float* x, std::int64_t n, double shift, double* out) {
#if BEAMNER_SOFTMAX_VECTORS
  exps_impl<Vd2, Vi2, Vf2>(x, n, shift, out, table_bits<Vi2>, MulAdd());
#else
  for (std::int64_t i = 0; i < n; ++i) out[i] = exp_nonpositive(static_cast<double>(x[i]) - shift);
#endif
}

void rows_baseline(const float* x, const std::uint8_t* valid, std::int64_t n_rows,
                   std::int64_t n_cols, float* out, float* packed) {
#if BEAMNER_SOFTMAX_VECTORS
  const auto sum = [](const float* p, std::int64_t n, double max_) {
    return sum_exp<Vd2, Vi2, Vf2>(p, n, max_, table_bits<Vi2>, MulAdd());
  };
#else
  const auto sum = [](const float* p, std::int64_t n, double max_) {
    double s[kSums] = {};
    for (std::int64_t q = 0; q < n; ++q) {
      const double d = static_cast<double>(p[q]) - max_;
      s[q % kSums] += exp_nonpositive(d);
    }
    return (s[0] + s[1]) + (s[2] + s[3]);
  };
#endif
  rows_impl(x, valid, n_rows, n_cols, out, packed, pack_scalar, sum);
}

#if BEAMNER_SOFTMAX_X86
// Left-packing 8 floats at a time: a table gives, for each 8-bit validity
// mask, the permutation that moves the valid lanes to the front.
struct PackTable {
  alignas(32) std::int32_t lanes[256][8];
  PackTable() {
    for (int mask = 0; mask < 256; ++mask) {
      int k = 0;
      for (int l = 0; l < 8; ++l) {
        if (mask & (1 << l)) lanes[mask][k++] = l;
      }
      for (; k < 8; ++k) lanes[mask][k] = 0;
    }
  }
};
const PackTable kPackTable;

__attribute__((target("avx2,fma"))) inline std::int64_t pack_avx2(const float* x,
                                                                  const std::uint8_t* valid,
                                                                  std::int64_t n, float* packed) {
  std::int64_t k = 0;
  std::int64_t j = 0;
  for (; j + kPackBlock <= n; j += kPackBlock) {
    std::uint64_t bytes;
    std::memcpy(&bytes, valid + j, sizeof bytes);
    const __m128i v = _mm_cvtsi64_si128(static_cast<long long>(bytes));
    const int mask = _mm_movemask_epi8(_mm_cmpgt_epi8(v, _mm_setzero_si128())) & 0xff;
    const __m256 scores = _mm256_loadu_ps(x + j);
    const __m256i perm =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(kPackTable.lanes[mask]));
    _mm256_storeu_ps(packed + k, _mm256_permutevar8x32_ps(scores, perm));
    k += __builtin_popcount(static_cast<unsigned>(mask));
  }
  return k + pack_scalar(x + j, valid + j, n - j, packed + k);
}

// a * b + c rounded once (FMA3, which every AVX2 CPU but a few VIA ones has;
// pick_kernel checks for both).
struct FusedMulAdd {
  __attribute__((target("avx2,fma"))) void operator()(const Vd4& a, const Vd4& b, const Vd4& c,
                                                      Vd4& out) const {
    out = Vd4(_mm256_fmadd_pd(__m256d(a), __m256d(b), __m256d(c)));
  }
};

__attribute__((target("avx2,fma"))) void rows_avx2(const float* x, const std::uint8_t* valid,
                                                   std::int64_t n_rows, std::int64_t n_cols,
                                                   float* out, float* packed) {
  const auto gather = [](const Vi4& j, Vi4& out) __attribute__((target("avx2,fma"))) {
    out =
        Vi4(_mm256_i64gather_epi64(reinterpret_cast<const long long*>(kPow2.bits), __m256i(j), 8));
  };
  const auto sum = [gather](const float* p, std::int64_t n, double max_)
      __attribute__((target("avx2,fma"))) {
    return sum_exp<Vd4, Vi4, Vf4>(p, n, max_, gather, FusedMulAdd());
  };
  rows_impl(x, valid, n_rows, n_cols, out, packed, pack_avx2, sum);
}

__attribute__((target("avx2,fma"))) void exps_avx2(const float* x, std::int64_t n, double shift,
                                                   double* out) {
  const auto gather = [](const Vi4& j, Vi4& out) __attribute__((target("avx2,fma"))) {
    out =
        Vi4(_mm256_i64gather_epi64(reinterpret_cast<const long long*>(kPow2.bits), __m256i(j), 8));
  };
  exps_impl<Vd4, Vi4, Vf4>(x, n, shift, out, gather, FusedMulAdd());
}
#endif

struct Kernel {
  RowsFn fn;
  ExpsFn exps;
  const char* name;
};

Kernel pick_kernel() {
#if BEAMNER_SOFTMAX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return {rows_avx2, exps_avx2, "avx2-fma"};
  }
#endif
  return {rows_baseline, exps_baseline, "baseline"};
}

const Kernel& kernel() {
  static const Kernel k = pick_kernel();
  return k;
}

}  // namespace

double exp_nonpositive(double x) {
#if BEAMNER_SOFTMAX_VECTORS
  Vd2 v = {x, x};
  exp_vector<Vd2, Vi2>(v, table_bits<Vi2>, MulAdd());
  return v[0];
#else
  return std::exp(x < kMinArg ? kMinArg : x);
#endif
}

void log_softmax_valid_rows(const float* x, const std::uint8_t* valid, std::int64_t n_rows,
                            std::int64_t n_cols, float* out, std::vector<float>& scratch) {
  // The packers store whole blocks past the valid count, and rows are padded to kSums.
  const auto needed = static_cast<std::size_t>(n_cols + kPackBlock + kSums);
  if (scratch.size() < needed) scratch.resize(needed);
  kernel().fn(x, valid, n_rows, n_cols, out, scratch.data());
}

void exp_shifted(const float* x, std::int64_t n, double shift, double* out) {
  kernel().exps(x, n, shift, out);
}

const char* log_softmax_kernel_name() { return kernel().name; }

}  // namespace beamner
