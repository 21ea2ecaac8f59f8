// When the kernels of csrc/ run their loops on one thread instead of a team, shared by them.
#pragma once

#include <cstdint>

namespace erwin {

// Batches of fewer points are built and searched on one thread: their work takes well under a
// millisecond, less than waking a team of threads costs on a busy machine (a dataset's pre_transform
// builds one small graph's tree and neighbours at a time).
constexpr int64_t kSerialPoints = 4096;

// The threads for work over num_points points: 1 below kSerialPoints, else `threads`.
inline int threads_for(int64_t num_points, int threads) { return num_points < kSerialPoints ? 1 : threads; }

}  // namespace erwin
