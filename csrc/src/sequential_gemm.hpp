// A small GEMM with blis' reference arithmetic: every output starts from
// +0.0f and adds its products a[i,l] * b[j,l] for l = 0..k-1 in order, each
// product rounded to float before the add (never fused into an FMA). Where
// blis runs its reference microkernel (CPUs it does not recognise) and k fits
// one of its k-blocks, this gives blis' result bit for bit, only faster.
// Private to the engine: PrecomputedScorer checks it against blis at run time.
#pragma once

#include <cstdint>
#include <vector>

namespace beamner {

/// Instruction sets the kernel is built for, slowest first.
enum class GemmLevel {
  kScalar,     ///< plain C++ loops, any compiler and CPU
  kVector128,  ///< GCC/Clang vector extensions, 16 bytes (SSE2 on x86-64, NEON on arm64)
  kAvx,        ///< x86 AVX, 32 bytes
  kAvx512,     ///< x86 AVX-512F, 64 bytes
};

/// "scalar", "vector128", "avx" or "avx512".
const char* gemm_level_name(GemmLevel level);

/// The levels this build can run on this CPU, slowest first (kScalar always).
const std::vector<GemmLevel>& supported_gemm_levels();

/// B (n x k, row-major, as thinc's upper W) transposed into the kernels'
/// layout: k rows of gemm_packed_stride(n) floats, zero past column n.
std::vector<float> pack_gemm_rhs(const float* b, int n, int k);
int gemm_packed_stride(int n);

/// c (m x n, row stride n) = a (m x k, row stride k) · Bᵀ, where packed_b
/// comes from pack_gemm_rhs; with a bias (n), c[i,j] = that sum + bias[j]
/// (the same float add as a separate pass would do).
using SequentialGemmFn = void (*)(const float* a, std::int64_t m, const float* packed_b, int n,
                                  int k, const float* bias, float* c);

/// The kernel for `level`; throws std::invalid_argument if the level is not supported.
SequentialGemmFn sequential_gemm(GemmLevel level);

}  // namespace beamner
