// The kernel of log_softmax.hpp. exp is a polynomial written with GCC/Clang
// vector extensions so that it vectorises without -ffast-math (which the
// engine may not use); the x86 AVX2 entry carries a target attribute and is
// picked at run time, the package itself stays baseline x86-64. Both entries
// add the exponentials in the same order (four running sums, element p into
// sum p % 4) and with the same operations, so they give the same bits.
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
#else
#define BEAMNER_SOFTMAX_X86 0
#endif

namespace beamner {
namespace {

// exp(x) = 2^n * exp(r), n = round(x / ln 2), r = x - n ln 2 in [-0.35, 0.35]
// (Cody-Waite: ln 2 in two parts, the first exact times any n used here),
// exp(r) by its Taylor series to r^13 / 13! (truncation below 1e-17).
constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2Hi = 6.93147180369123816490e-01;
constexpr double kLn2Lo = 1.90821492927058770002e-10;
constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to an integer
constexpr std::int64_t kShifterBits = 0x4338000000000000LL;
constexpr double kMinArg = -708.0;  // exp(-708) is still a normal double
constexpr double kInverseFactorials[] = {1.0 / 6227020800.0,
                                         1.0 / 479001600.0,
                                         1.0 / 39916800.0,
                                         1.0 / 3628800.0,
                                         1.0 / 362880.0,
                                         1.0 / 40320.0,
                                         1.0 / 5040.0,
                                         1.0 / 720.0,
                                         1.0 / 120.0,
                                         1.0 / 24.0,
                                         1.0 / 6.0,
                                         1.0 / 2.0,
                                         1.0,
                                         1.0};
// Padding of the packed valid scores: far below any row maximum, so its exp is 0.
constexpr double kPad = -1e300;
constexpr int kSums = 4;

#if BEAMNER_SOFTMAX_VECTORS
typedef double Vd2 __attribute__((vector_size(16)));
typedef long long Vi2 __attribute__((vector_size(16)));
typedef double Vd4 __attribute__((vector_size(32)));
typedef long long Vi4 __attribute__((vector_size(32)));

// In place (by reference: a 32-byte vector by value would change the ABI).
template <class VD, class VI>
[[gnu::always_inline]] inline void exp_vector(VD& x) {
  const VD min_arg = VD{} + kMinArg;
  const VI underflow = x < min_arg;
  x = underflow ? min_arg : x;
  const VD t = x * kLog2e + kShifter;
  const VD n = t - kShifter;
  const VD r = (x - n * kLn2Hi) - n * kLn2Lo;
  VD p = VD{} + kInverseFactorials[0];
  for (int i = 1; i < 14; ++i) p = p * r + kInverseFactorials[i];
  VI bits;
  std::memcpy(&bits, &t, sizeof bits);
  const VI scale_bits = ((bits - kShifterBits) + 1023) << 52;
  VD scale;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  const VD e = p * scale;
  VI e_bits;
  std::memcpy(&e_bits, &e, sizeof e_bits);
  e_bits &= ~underflow;
  std::memcpy(&x, &e_bits, sizeof x);
}

#endif

// Rows are done in chunks: every row's valid scores are packed into one
// buffer (each row padded to kSums), then each row's maximum and exps (the
// vectors are independent, so the polynomial's latency overlaps), then each
// row's sum gives its log-sum-exp.
constexpr std::int64_t kChunkRows = 64;

template <class VD, class VI>
[[gnu::always_inline]] inline void rows_impl(const float* x, const std::uint8_t* valid,
                                             std::int64_t n_rows, std::int64_t n_cols, float* out,
                                             double* packed) {
  constexpr int kLanes = static_cast<int>(sizeof(VD) / sizeof(double));
  static_assert(kSums % kLanes == 0, "the running sums must fill whole vectors");
  std::int64_t ends[kChunkRows];
  double maxes[kChunkRows];
  for (std::int64_t first = 0; first < n_rows; first += kChunkRows) {
    const std::int64_t n_chunk = std::min(kChunkRows, n_rows - first);
    std::int64_t k = 0;
    for (std::int64_t i = 0; i < n_chunk; ++i) {
      const float* xr = x + (first + i) * n_cols;
      const std::uint8_t* vr = valid + (first + i) * n_cols;
      // Branchless: every cell is stored, the count advances only for valid ones.
      const std::int64_t begin = k;
      for (std::int64_t j = 0; j < n_cols; ++j) {
        packed[k] = static_cast<double>(xr[j]);
        k += vr[j] != 0;
      }
      const std::int64_t padded = begin + (k - begin + kSums - 1) / kSums * kSums;
      for (; k < padded; ++k) packed[k] = kPad;
      ends[i] = k;
    }
    std::int64_t begin = 0;
    for (std::int64_t i = 0; i < n_chunk; ++i) {
      if (ends[i] == begin) {
        maxes[i] = 0.0;
        continue;
      }
#if BEAMNER_SOFTMAX_VECTORS
      VD max_v;
      std::memcpy(&max_v, packed + begin, sizeof max_v);
      for (std::int64_t p = begin + kLanes; p < ends[i]; p += kLanes) {
        VD v;
        std::memcpy(&v, packed + p, sizeof v);
        max_v = v > max_v ? v : max_v;
      }
      double max_ = max_v[0];
      for (int l = 1; l < kLanes; ++l) max_ = max_v[l] > max_ ? max_v[l] : max_;
      for (std::int64_t p = begin; p < ends[i]; p += kLanes) {
        VD v;
        std::memcpy(&v, packed + p, sizeof v);
        v -= max_;
        exp_vector<VD, VI>(v);
        std::memcpy(packed + p, &v, sizeof v);
      }
#else
      double max_ = packed[begin];
      for (std::int64_t p = begin + 1; p < ends[i]; ++p) max_ = packed[p] > max_ ? packed[p] : max_;
      for (std::int64_t p = begin; p < ends[i]; ++p) packed[p] = exp_nonpositive(packed[p] - max_);
#endif
      maxes[i] = max_;
      begin = ends[i];
    }
    begin = 0;
    for (std::int64_t i = 0; i < n_chunk; ++i) {
      const float* xr = x + (first + i) * n_cols;
      float* o = out + (first + i) * n_cols;
      if (ends[i] == begin) {
        std::fill(o, o + n_cols, 0.0f);
        continue;
      }
      double s[kSums] = {};
      for (std::int64_t p = begin; p < ends[i]; p += kSums) {
        for (int l = 0; l < kSums; ++l) s[l] += packed[p + l];
      }
      begin = ends[i];
      const double lse = maxes[i] + std::log((s[0] + s[1]) + (s[2] + s[3]));
      for (std::int64_t j = 0; j < n_cols; ++j) {
        o[j] = static_cast<float>(static_cast<double>(xr[j]) - lse);
      }
    }
  }
}

using RowsFn = void (*)(const float*, const std::uint8_t*, std::int64_t, std::int64_t, float*,
                        double*);

#if BEAMNER_SOFTMAX_VECTORS
void rows_baseline(const float* x, const std::uint8_t* valid, std::int64_t n_rows,
                   std::int64_t n_cols, float* out, double* packed) {
  rows_impl<Vd2, Vi2>(x, valid, n_rows, n_cols, out, packed);
}
#else
void rows_baseline(const float* x, const std::uint8_t* valid, std::int64_t n_rows,
                   std::int64_t n_cols, float* out, double* packed) {
  rows_impl<double, std::int64_t>(x, valid, n_rows, n_cols, out, packed);
}
#endif

#if BEAMNER_SOFTMAX_X86
__attribute__((target("avx2"))) void rows_avx2(const float* x, const std::uint8_t* valid,
                                               std::int64_t n_rows, std::int64_t n_cols, float* out,
                                               double* packed) {
  rows_impl<Vd4, Vi4>(x, valid, n_rows, n_cols, out, packed);
}
#endif

struct Kernel {
  RowsFn fn;
  const char* name;
};

Kernel pick_kernel() {
#if BEAMNER_SOFTMAX_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) return {rows_avx2, "avx2"};
#endif
  return {rows_baseline, "baseline"};
}

const Kernel& kernel() {
  static const Kernel k = pick_kernel();
  return k;
}

}  // namespace

double exp_nonpositive(double x) {
#if BEAMNER_SOFTMAX_VECTORS
  Vd2 v = {x, x};
  exp_vector<Vd2, Vi2>(v);
  return v[0];
#else
  if (x < kMinArg) return 0.0;
  return std::exp(x);
#endif
}

void log_softmax_valid_rows(const float* x, const std::uint8_t* valid, std::int64_t n_rows,
                            std::int64_t n_cols, float* out, std::vector<double>& scratch) {
  const auto needed =
      static_cast<std::size_t>(kChunkRows * ((n_cols + kSums - 1) / kSums + 1) * kSums);
  if (scratch.size() < needed) scratch.resize(needed);
  kernel().fn(x, valid, n_rows, n_cols, out, scratch.data());
}

const char* log_softmax_kernel_name() { return kernel().name; }

}  // namespace beamner
