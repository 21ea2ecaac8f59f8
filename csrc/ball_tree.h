// Ball-tree slot assignment for a ragged batch of point clouds (Erwin, Alg. 1).
//
// Graph g owns points [node_ptr[g], node_ptr[g+1]) and slots [slot_ptr[g], slot_ptr[g+1]).
// A tree node holding n points and s slots (n <= s) is split along the dimension of largest
// spread (first one on ties). Inside a block (s <= block_size) the left child gets floor(n/2)
// points and s/2 slots (the paper's median split); a node spanning k = s / block_size blocks
// gives floor(k/2) blocks and floor(n * floor(k/2) / k) points to the left. A node with one
// point fills all of its slots with it; the first of them is marked real in the mask.
//
// Points are ordered by the key (coordinate, point id): ties are broken by id, so the result
// is a pure function of the input, whatever the thread count. The pure-PyTorch engine in
// torch_geometric_erwin/tree/torch_engine.py implements the same rule and must agree exactly.
//
// The coordinates are copied once into a row-major buffer that is permuted in place together
// with the point ids, so every pass over a node reads contiguous memory.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace erwin {

class PointBuffer {
 public:
  PointBuffer(const double* coords, int64_t num_points, int64_t dim)
      : coords_(coords, coords + num_points * dim), ids_(num_points), dim_(dim) {
    std::iota(ids_.begin(), ids_.end(), int64_t{0});
  }

  int64_t id(int64_t row) const { return ids_[row]; }

  // (coordinate along dim, id) of row a is smaller than that of row b.
  bool less(int64_t a, int64_t b, int64_t dim) const {
    const double va = coords_[a * dim_ + dim], vb = coords_[b * dim_ + dim];
    return va < vb || (va == vb && ids_[a] < ids_[b]);
  }

  void swap_rows(int64_t a, int64_t b) {
    std::swap_ranges(&coords_[a * dim_], &coords_[a * dim_] + dim_, &coords_[b * dim_]);
    std::swap(ids_[a], ids_[b]);
  }

  int64_t split_dimension(int64_t lo, int64_t hi) const {
    int64_t best = 0;
    double best_spread = -1.0;
    for (int64_t d = 0; d < dim_; ++d) {
      double low = coords_[lo * dim_ + d], high = low;
      for (int64_t row = lo + 1; row < hi; ++row) {
        const double value = coords_[row * dim_ + d];
        low = std::min(low, value);
        high = std::max(high, value);
      }
      if (high - low > best_spread) {
        best_spread = high - low;
        best = d;
      }
    }
    return best;
  }

  // Rearrange rows [lo, hi) so that [lo, mid) holds the mid - lo smallest keys.
  void select(int64_t lo, int64_t hi, int64_t mid, int64_t dim) {
    // Median-of-three needs ~2 log2(n) rounds on any realistic input; past a generous cap the
    // input is adversarial, and sorting what is left keeps the worst case at O(n log n).
    int64_t rounds = 0, max_rounds = 16;
    for (int64_t size = hi - lo; size > 1; size /= 2) max_rounds += 4;
    while (hi - lo > 16) {
      if (++rounds > max_rounds) {
        sort_rows(lo, hi, dim);
        return;
      }
      const int64_t pivot = median_of_three(lo, lo + (hi - lo) / 2, hi - 1, dim);
      const int64_t split = hoare_partition(lo, hi, pivot, dim);
      if (mid <= split) {
        hi = split + 1;
      } else {
        lo = split + 1;
      }
    }
    for (int64_t i = lo + 1; i < hi; ++i) {
      for (int64_t j = i; j > lo && less(j, j - 1, dim); --j) swap_rows(j, j - 1);
    }
  }

 private:
  int64_t median_of_three(int64_t a, int64_t b, int64_t c, int64_t dim) const {
    if (less(a, b, dim)) {
      if (less(b, c, dim)) return b;
      return less(a, c, dim) ? c : a;
    }
    if (less(a, c, dim)) return a;
    return less(b, c, dim) ? c : b;
  }

  // Returns j with every key in [lo, j] <= every key in [j + 1, hi).
  int64_t hoare_partition(int64_t lo, int64_t hi, int64_t pivot_row, int64_t dim) {
    const double pivot_value = coords_[pivot_row * dim_ + dim];
    const int64_t pivot_id = ids_[pivot_row];
    auto below = [&](int64_t row) {
      const double v = coords_[row * dim_ + dim];
      return v < pivot_value || (v == pivot_value && ids_[row] < pivot_id);
    };
    auto above = [&](int64_t row) {
      const double v = coords_[row * dim_ + dim];
      return v > pivot_value || (v == pivot_value && ids_[row] > pivot_id);
    };
    int64_t i = lo - 1, j = hi;
    while (true) {
      do ++i; while (below(i));
      do --j; while (above(j));
      if (i >= j) return j;
      swap_rows(i, j);
    }
  }

  void sort_rows(int64_t lo, int64_t hi, int64_t dim) {
    std::vector<int64_t> order(hi - lo);
    std::iota(order.begin(), order.end(), lo);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return less(a, b, dim); });
    std::vector<double> coords(order.size() * dim_);
    std::vector<int64_t> ids(order.size());
    for (size_t k = 0; k < order.size(); ++k) {
      std::copy_n(&coords_[order[k] * dim_], dim_, &coords[k * dim_]);
      ids[k] = ids_[order[k]];
    }
    std::copy(coords.begin(), coords.end(), &coords_[lo * dim_]);
    std::copy(ids.begin(), ids.end(), &ids_[lo]);
  }

  std::vector<double> coords_;
  std::vector<int64_t> ids_;
  int64_t dim_;
};

struct TreeOutput {
  int64_t* index;
  bool* mask;
};

// Nodes with more points than this split their children into OpenMP tasks.
constexpr int64_t kTaskCutoff = 4096;

inline void build_node(PointBuffer& points, TreeOutput out, int64_t lo, int64_t hi,
                       int64_t slot_lo, int64_t num_slots, int64_t block_size) {
  const int64_t n = hi - lo;
  if (n == 1) {
    std::fill_n(out.index + slot_lo, num_slots, points.id(lo));
    out.mask[slot_lo] = true;
    std::fill_n(out.mask + slot_lo + 1, num_slots - 1, false);
    return;
  }
  int64_t left_points, left_slots;
  if (num_slots > block_size) {
    const int64_t blocks = num_slots / block_size, left_blocks = blocks / 2;
    left_points = n * left_blocks / blocks;
    left_slots = left_blocks * block_size;
  } else {
    left_points = n / 2;
    left_slots = num_slots / 2;
  }
  points.select(lo, hi, lo + left_points, points.split_dimension(lo, hi));
  const int64_t mid = lo + left_points;
  if (n > kTaskCutoff) {
#pragma omp task default(none) shared(points) firstprivate(out, lo, mid, slot_lo, left_slots, block_size)
    build_node(points, out, lo, mid, slot_lo, left_slots, block_size);
  } else {
    build_node(points, out, lo, mid, slot_lo, left_slots, block_size);
  }
  build_node(points, out, mid, hi, slot_lo + left_slots, num_slots - left_slots, block_size);
}

// Fills index[slot] (point id, global) and mask[slot] for every slot of every graph.
inline void build_ball_trees(const double* coords, int64_t num_points, int64_t dim,
                             const int64_t* node_ptr, const int64_t* slot_ptr, int64_t num_graphs,
                             int64_t block_size, int64_t* index, bool* mask) {
  PointBuffer points(coords, num_points, dim);
  const TreeOutput out{index, mask};
#pragma omp parallel default(none) shared(points, node_ptr, slot_ptr) firstprivate(out, num_graphs, block_size)
#pragma omp single
  for (int64_t g = 0; g < num_graphs; ++g) {
    if (node_ptr[g + 1] == node_ptr[g]) continue;
#pragma omp task default(none) shared(points, node_ptr, slot_ptr) firstprivate(out, g, block_size)
    build_node(points, out, node_ptr[g], node_ptr[g + 1], slot_ptr[g], slot_ptr[g + 1] - slot_ptr[g],
               block_size);
  }
}

}  // namespace erwin
