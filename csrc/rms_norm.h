// RMSNorm over the C channels of every row on CPU, float32, forward and backward:
//
//   y = x r w,   r = 1 / sqrt(mean(x^2) + eps)
//   dx = r (dy w - x r^2 mean(dy w x)),   dw = sum over rows of dy x r
//
// Each pass reads every row once, where PyTorch's composite layer makes about ten elementwise
// passes over [rows, C] tensors. dw is summed per block of kBlockRows rows and then over the blocks
// in order, so that it does not depend on the thread count.
//
// Layouts (row-major): x, y and their gradients [rows, C]; weight, grad_weight [C]; inverse_rms
// [rows]; grad_weight_parts [ceil(rows / kBlockRows), C]. Validated in Python and by the bindings.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "vector_math.h"

namespace erwin {

constexpr int64_t kBlockRows = 64;

ERWIN_MULTIVERSION inline void rms_norm_forward(const float* x, const float* weight, int64_t rows, int64_t channels,
                                                float eps, int threads, float* y, float* inverse_rms) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const float* in = x + row * channels;
    float* out = y + row * channels;
    float squares = 0.0f;
#pragma omp simd reduction(+ : squares)
    for (int64_t c = 0; c < channels; ++c) squares += in[c] * in[c];
    const float r = 1.0f / std::sqrt(squares / float(channels) + eps);
    inverse_rms[row] = r;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) out[c] = in[c] * r * weight[c];
  }
}

ERWIN_MULTIVERSION inline void rms_norm_backward(const float* x, const float* weight, const float* inverse_rms,
                                                 const float* grad_y, int64_t rows, int64_t channels, int threads,
                                                 float* grad_x, float* grad_weight_parts, float* grad_weight) {
  const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
#pragma omp parallel num_threads(threads)
  {
#pragma omp for schedule(static)
    for (int64_t block = 0; block < blocks; ++block) {
      float* part = grad_weight_parts + block * channels;
      std::fill(part, part + channels, 0.0f);
      for (int64_t row = block * kBlockRows; row < std::min(rows, (block + 1) * kBlockRows); ++row) {
        const float* in = x + row * channels;
        const float* grad = grad_y + row * channels;
        float* out = grad_x + row * channels;
        const float r = inverse_rms[row];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int64_t c = 0; c < channels; ++c) dot += grad[c] * weight[c] * in[c];
        const float correction = r * r * dot / float(channels);
#pragma omp simd
        for (int64_t c = 0; c < channels; ++c) {
          out[c] = r * (grad[c] * weight[c] - in[c] * correction);
          part[c] += grad[c] * in[c] * r;
        }
      }
    }
#pragma omp for schedule(static)
    for (int64_t c = 0; c < channels; ++c) {
      float sum = 0.0f;
      for (int64_t block = 0; block < blocks; ++block) sum += grad_weight_parts[block * channels + c];
      grad_weight[c] = sum;
    }
  }
}

}  // namespace erwin
