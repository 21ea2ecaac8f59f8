// Scalar functions written so that loops over them vectorise, and the clones of the kernels for
// the vector extensions of x86-64, shared by the kernels of csrc/.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

// Clones of the kernels for AVX-512, AVX2 and the baseline, picked at load time for the CPU at hand.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define ERWIN_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ERWIN_MULTIVERSION
#endif

namespace erwin {

// exp(x) for x <= 0 as 2^n exp(r), n = round(x / ln 2), |r| <= ln(2) / 2, exp(r) by its Taylor
// polynomial of degree 7 (truncation error below 1e-8). Branch-free, so that it vectorises; 0 below
// -87.3 (and for -inf), NaN for NaN. n is read off the bits of x / ln 2 + 1.5 * 2^23, whose low
// mantissa bits hold it, so no float is converted to an integer.
inline float exp_nonpositive(float x) {
  const float clamped = x < -87.3f ? -87.3f : x;
  const float shifted = clamped * 1.44269504f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const float r = (clamped - n * 0.693145751953125f) - n * 1.428606765330187e-6f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  uint32_t bits;
  std::memcpy(&bits, &shifted, sizeof bits);
  bits = (bits - 0x4B400000u + 127u) << 23;  // 2^n
  float power;
  std::memcpy(&power, &bits, sizeof power);
  return x < -87.3f ? 0.0f : p * power;
}

// erf(x) by Abramowitz & Stegun's formula 7.1.26 (absolute error below 1.5e-7), given
// gaussian = exp(-x^2), which the caller usually needs as well.
inline float erf_given_gaussian(float x, float gaussian) {
  const float t = 1.0f / (1.0f + 0.3275911f * std::fabs(x));
  float p = 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const float magnitude = 1.0f - p * t * gaussian;
  return x < 0.0f ? -magnitude : magnitude;
}

}  // namespace erwin
