// Row-wise log-softmax over each row's valid actions, for the normalized
// beam (BeamOptions::normalize == Normalize::kLocal). Private to the engine.
#pragma once

#include <cstdint>
#include <vector>

namespace beamner {

/// For each of `n_rows` rows of `n_cols` scores: out[j] = float(double(x[j]) - lse),
/// lse = log(sum over valid j of exp(double(x[j]))), computed in double around
/// the valid maximum, as numpy would in float64 before a cast to float32.
/// Invalid cells are written as well (with the row's lse; callers ignore
/// them); a row without a valid action is written as zeros. `scratch` is
/// resized as needed (no allocation once it is large enough).
void log_softmax_valid_rows(const float* x, const std::uint8_t* valid, std::int64_t n_rows,
                            std::int64_t n_cols, float* out, std::vector<float>& scratch);

/// out[i] = exp(double(x[i]) - shift) for x[i] <= shift, by the same kernel
/// (within 2 ulp of std::exp; arguments below -708 give exp(-708)).
void exp_shifted(const float* x, std::int64_t n, double shift, double* out);

/// exp(x) for double x <= 0 with a vectorisable polynomial (within ~2 ulp of
/// std::exp; 0 below -708). Exposed for the tests.
double exp_nonpositive(double x);

/// "avx2-fma" or "baseline": the kernel this CPU runs.
const char* log_softmax_kernel_name();

}  // namespace beamner
