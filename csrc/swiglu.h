// The elementwise part of the SwiGLU layer's backward pass on CPU, float32, in one pass:
//
//   z = SiLU(g) v,   dv = dz SiLU(g),   dg = dz v SiLU'(g),   SiLU'(g) = s (1 + g (1 - s)), s = sigmoid(g)
//
// for rows of pre-activations [g | v] (gate_value, [rows, 2H]) and the gradient dz of the gated
// product ([rows, H]). It writes z (which the caller needs for the gradient of W_3) and [dg | dv]
// ([rows, 2H]). Through PyTorch this is five elementwise passes over a block, each reading and
// writing memory; here every element is read once. Validated in Python and by the bindings.
#pragma once

#include <cstdint>

#include "vector_math.h"

namespace erwin {

ERWIN_MULTIVERSION inline void swiglu_backward(const float* gate_value, const float* grad_gated, int64_t rows,
                                               int64_t hidden, int threads, float* gated, float* grad_gate_value) {
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t row = 0; row < rows; ++row) {
    const float* gate = gate_value + row * 2 * hidden;
    const float* value = gate + hidden;
    const float* grad = grad_gated + row * hidden;
    float* out = gated + row * hidden;
    float* grad_gate = grad_gate_value + row * 2 * hidden;
    float* grad_value = grad_gate + hidden;
#pragma omp simd
    for (int64_t c = 0; c < hidden; ++c) {
      // sigmoid from exp(-|g|) <= 1, which neither overflows nor loses the small tail
      const float tail = exp_nonpositive(-std::fabs(gate[c]));
      const float sigmoid = (gate[c] >= 0.0f ? 1.0f : tail) / (1.0f + tail);
      const float silu = gate[c] * sigmoid;
      out[c] = silu * value[c];
      grad_value[c] = grad[c] * silu;
      grad_gate[c] = grad[c] * value[c] * sigmoid * (1.0f + gate[c] * (1.0f - sigmoid));
    }
  }
}

}  // namespace erwin
