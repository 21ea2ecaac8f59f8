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
// A set of at most kLocal points (a graph, or a node of a bigger one) is sorted once per
// dimension (radix sort). A node then owns the same range of every sorted list: its spread
// along d is read off the ends of list d, and its median split is the first half of the list
// of the split dimension, so a split is a stable partition of the other lists, linear and
// branch-free, with no selection. Nodes of at most 64 points switch to bit masks: a node is one
// 64-bit mask per dimension over the points' ranks along it, spreads come from its lowest and
// highest bit, and a split moves half of the points' bits. Nodes of a bigger graph above kLocal
// points are split in place by selection on the rows (coordinates and id moved together), which
// streams through memory where the lists' random accesses would miss the caches, and whose
// subtrees share no memory, so OpenMP tasks build them side by side.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "parallel.h"

namespace erwin {

// Unsigned integers that order as the coordinates do, so a radix sort can order them.
// -0 and +0 are equal coordinates, and must tie (then compare by id) as in the float order.
inline uint32_t order_key(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if (value == 0) bits = 0;
  return bits & 0x80000000u ? ~bits : bits | 0x80000000u;
}

inline uint64_t order_key(double value) {
  uint64_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  if (value == 0) bits = 0;
  return bits & (uint64_t{1} << 63) ? ~bits : bits | (uint64_t{1} << 63);
}

// Left child of a node with num_points points and num_slots slots: (points, slots). Blocks
// have 2^block_shift slots. An even number of blocks halves the points, with no division.
inline std::pair<int64_t, int64_t> left_share(int64_t num_points, int64_t num_slots, int block_shift) {
  if (num_slots > (int64_t{1} << block_shift)) {
    const int64_t blocks = num_slots >> block_shift, left_blocks = blocks / 2;
    return {blocks % 2 == 0 ? num_points / 2 : num_points * left_blocks / blocks, left_blocks << block_shift};
  }
  return {num_points / 2, num_slots / 2};
}

// The split dimension of a node: the one of largest spread high - low, the first one on ties;
// spreads are differenced in double. extent(d) returns the node's (low, high) along d.
template <class Extent>
int64_t widest_dimension(int64_t dim, Extent extent) {
  int64_t best = 0;
  double best_spread = -1;
  for (int64_t d = 0; d < dim; ++d) {
    const auto [low, high] = extent(d);
    const double spread = double(high) - double(low);
    const bool wider = spread > best_spread;  // a select, not a branch: wider is a coin flip
    best = wider ? d : best;
    best_spread = wider ? spread : best_spread;
  }
  return best;
}

struct TreeOutput {
  int64_t* index;
  bool* mask;
  int block_shift;  // blocks have 2^block_shift slots

  void leaf(int64_t slot_lo, int64_t num_slots, int64_t point) const {
    std::fill_n(index + slot_lo, num_slots, point);
    mask[slot_lo] = true;
    std::fill_n(mask + slot_lo + 1, num_slots - 1, false);
  }
};

// An allocator that leaves new elements uninitialised (scalars only): the work arrays are
// written before they are read, and zeroing them first cost a few percent.
template <class T>
struct Uninitialized : std::allocator<T> {
  template <class U>
  struct rebind {  // std::allocator's own would make the vector's allocator a plain one
    using other = Uninitialized<U>;
  };
  template <class U>
  void construct(U* element) noexcept {
    ::new (static_cast<void*>(element)) U;
  }
};
template <class T>
using Buffer = std::vector<T, Uninitialized<T>>;

// Sets of at most this many points are built from sorted lists (which then fit in the L2
// cache), bigger nodes by selection on rows.
constexpr int64_t kLocal = 32768;
// Nodes with at most this many points are built on bit masks (one 64-bit word per dimension).
constexpr int64_t kSmall = 64;

// A fixed-size array for kDim > 0 (no allocation per tree), a vector for run-time dimensions.
template <class T, int kDim, int64_t kPerDim>
using Table = std::conditional_t<(kDim > 0), std::array<T, (kDim > 0 ? kDim : 1) * kPerDim>, std::vector<T>>;

template <class T, int kDim, int64_t kPerDim>
Table<T, kDim, kPerDim> make_table(int64_t dim) {
  if constexpr (kDim > 0) {
    return {};
  } else {
    return std::vector<T>(dim * kPerDim);
  }
}

template <class Key, class Index>
struct SortEntry {
  Key key;
  Index id;
};

// Writes the ids of the entries make_entry(0), ..., make_entry(n - 1) to `sorted` in order of
// their keys: a least-significant-digit radix sort by bytes, stable (equal keys keep their
// order), where a byte that all keys share needs no pass. `entries` and `scratch` hold n.
template <class Key, class Index, class MakeEntry>
void radix_sort(int64_t n, MakeEntry make_entry, Buffer<SortEntry<Key, Index>>& entries,
                Buffer<SortEntry<Key, Index>>& scratch, Index* sorted) {
  constexpr int kBytes = sizeof(Key);
  std::array<std::array<int64_t, 256>, kBytes> counts{};
  for (int64_t i = 0; i < n; ++i) {
    entries[i] = make_entry(i);
    for (int b = 0; b < kBytes; ++b) ++counts[b][(entries[i].key >> (8 * b)) & 255];
  }
  std::array<int, kBytes> passes;
  int num_passes = 0;
  for (int b = 0; b < kBytes; ++b) {
    if (counts[b][(entries[0].key >> (8 * b)) & 255] != n) passes[num_passes++] = b;
  }
  if (num_passes == 0) {
    for (int64_t i = 0; i < n; ++i) sorted[i] = entries[i].id;
    return;
  }
  for (int p = 0; p < num_passes; ++p) {
    const int shift = 8 * passes[p];
    std::array<int64_t, 256>& offsets = counts[passes[p]];
    int64_t total = 0;
    for (int64_t& count : offsets) total += std::exchange(count, total);
    if (p + 1 < num_passes) {
      for (const auto& entry : entries) scratch[offsets[(entry.key >> shift) & 255]++] = entry;
      entries.swap(scratch);
    } else {  // the last pass writes the ids straight to `sorted`
      for (const auto& entry : entries) sorted[offsets[(entry.key >> shift) & 255]++] = entry.id;
    }
  }
}

// Builds the subtrees of nodes with at most kSmall points. Point e of such a node is the e-th
// in its order along dimension 0; a set of its points is, for every dimension d, the mask of
// their ranks along d. One instance serves all small nodes of a SortedTree.
template <class Scalar, int kDim>
class SmallNodes {
 public:
  explicit SmallNodes(int64_t dim)
      : dim_(dim),
        ids_(),
        order_(make_table<uint8_t, kDim, kSmall>(dim)),
        rank_bit_(make_table<uint64_t, kDim, kSmall>(dim)),
        value_(make_table<Scalar, kDim, kSmall>(dim)),
        nodes_(),
        masks_(make_table<uint64_t, kDim, 2 * kSmall>(dim)) {}

  int64_t dim() const {
    if constexpr (kDim > 0) return kDim;
    return dim_;
  }

  // sorted[d * stride + r]: id of the point of rank r along d, global_id(id) its id in the
  // input; point_of[id] is scratch.
  template <class Index, class GlobalId>
  void build(const Scalar* coords, int64_t num_points, const Index* sorted, int64_t stride, uint8_t* point_of,
             GlobalId global_id, int64_t slot_lo, int64_t num_slots, const TreeOutput& out) {
    const int64_t dim = this->dim();
    const Index* by_first = sorted;
    for (int64_t e = 0; e < num_points; ++e) {
      ids_[e] = global_id(by_first[e]);
      point_of[by_first[e]] = uint8_t(e);
    }
    for (int64_t d = 0; d < dim; ++d) {
      const Index* by_d = sorted + d * stride;
      for (int64_t r = 0; r < num_points; ++r) {
        const uint8_t e = point_of[by_d[r]];
        order_[d * kSmall + r] = e;
        rank_bit_[d * kSmall + e] = uint64_t{1} << r;
        value_[d * kSmall + r] = coords[by_d[r] * dim + d];
      }
    }
    nodes_[0] = {num_points, slot_lo, num_slots};
    std::fill_n(masks_.data(), dim, num_points == 64 ? ~uint64_t{0} : (uint64_t{1} << num_points) - 1);
    split_all(out);
  }

 private:
  struct Node {
    int64_t num_points, slot_lo, num_slots;
  };

  // Breadth-first, one depth at a time: nodes_[i] with masks_ row i (masks[d]: the ranks along
  // d of its points) for the nodes of one depth, rows kSmall + i for their children. Nodes of
  // one depth are of (nearly) one size, so the loops below run (nearly) the same number of
  // times for all of them, and their branches are predicted well.
  void split_all(const TreeOutput& out) {
    const int64_t dim = this->dim();
    Node* nodes = nodes_.data();
    Node* children = nodes + kSmall;
    uint64_t* masks_of = masks_.data();
    uint64_t* children_masks = masks_of + kSmall * dim;
    for (int64_t count = 1; count > 0;) {
      int64_t next = 0;
      for (int64_t i = 0; i < count; ++i) {
        const auto [num_points, slot_lo, num_slots] = nodes[i];
        const uint64_t* masks = masks_of + i * dim;
        if (num_points == 1) {  // along dimension 0 rank and point coincide
          out.leaf(slot_lo, num_slots, ids_[__builtin_ctzll(masks[0])]);
          continue;
        }
        const int64_t best = widest_dimension(dim, [this, masks](int64_t d) {
          return std::pair{value_[d * kSmall + __builtin_ctzll(masks[d])],
                           value_[d * kSmall + 63 - __builtin_clzll(masks[d])]};
        });
        const auto [left_points, left_slots] = left_share(num_points, num_slots, out.block_shift);
        const uint8_t* by_best = &order_[best * kSmall];
        if (num_points == 2) {  // two leaves, the smaller key first: no masks to build
          out.leaf(slot_lo, left_slots, ids_[by_best[__builtin_ctzll(masks[best])]]);
          out.leaf(slot_lo + left_slots, num_slots - left_slots, ids_[by_best[63 - __builtin_clzll(masks[best])]]);
          continue;
        }
        uint64_t rest = masks[best];
        for (int64_t k = 0; k < left_points; ++k) rest &= rest - 1;
        const uint64_t left_ranks = masks[best] ^ rest;  // the left_points lowest ranks along best
        uint64_t* left = children_masks + next * dim;
        uint64_t* right = left + dim;
        for (int64_t d = 0; d < dim; ++d) {
          uint64_t bits = left_ranks;
          if (d != best) {  // a loop over set bits: short, and not worth vectorising
            bits = 0;
            for (uint64_t ranks = left_ranks; ranks != 0; ranks &= ranks - 1) {
              bits |= rank_bit_[d * kSmall + by_best[__builtin_ctzll(ranks)]];
            }
          }
          left[d] = bits;
          right[d] = masks[d] ^ bits;
        }
        children[next++] = {left_points, slot_lo, left_slots};
        children[next++] = {num_points - left_points, slot_lo + left_slots, num_slots - left_slots};
      }
      std::swap(nodes, children);
      std::swap(masks_of, children_masks);
      count = next;
    }
  }

  const int64_t dim_;
  std::array<int64_t, kSmall> ids_;            // point -> id in the input
  Table<uint8_t, kDim, kSmall> order_;         // [d][rank] -> point
  Table<uint64_t, kDim, kSmall> rank_bit_;     // [d][point] -> 1 << rank
  Table<Scalar, kDim, kSmall> value_;          // [d][rank] -> coordinate
  std::array<Node, 2 * kSmall> nodes_;         // the nodes of one depth, then their children
  Table<uint64_t, kDim, 2 * kSmall> masks_;    // [row][d] -> ranks along d of the node in row
};

// The tree of a set of at most kLocal points: rows coords[i * dim ...] with ids (within the
// graph) ids[i], or ids i if ids is null; the set's own numbering of its points is i. Every
// dimension has a list of the points sorted along it, in two copies (a split reads one and
// writes the other); a node owns the same range of each.
template <class Scalar, int kDim, class Index>
class SortedTree {
 public:
  SortedTree(const Scalar* coords, int64_t num_points, int64_t dim, const Index* ids, int64_t first_id,
             TreeOutput out)
      : coords_(coords),
        ids_(ids),
        num_points_(num_points),
        dim_(dim),
        first_id_(first_id),
        out_(out),
        lists_(2 * dim * num_points),
        side_(num_points) {}

  // Builds the tree into slots [slot_lo, slot_lo + num_slots) of the output.
  void build(int64_t slot_lo, int64_t num_slots) {
    using Key = decltype(order_key(Scalar{}));
    Buffer<SortEntry<Key, Index>> entries(num_points_), scratch(num_points_);
    // Equal coordinates must end up in id order, so each stable sort starts from id order.
    Buffer<Index> by_id(ids_ ? num_points_ : 0);
    if (ids_) {
      using IdKey = std::make_unsigned_t<Index>;
      Buffer<SortEntry<IdKey, Index>> id_entries(num_points_), id_scratch(num_points_);
      const auto by_input = [this](int64_t i) { return SortEntry<IdKey, Index>{IdKey(ids_[i]), Index(i)}; };
      radix_sort(num_points_, by_input, id_entries, id_scratch, by_id.data());
    }
    for (int64_t d = 0; d < dim(); ++d) {
      const auto along_d = [this, d, &by_id](int64_t i) {
        const Index point = ids_ ? by_id[i] : Index(i);
        return SortEntry<Key, Index>{order_key(coord(point, d)), point};
      };
      radix_sort(num_points_, along_d, entries, scratch, list(0, d));
    }
    SmallNodes<Scalar, kDim> small(dim());
    split(0, num_points_, 0, slot_lo, num_slots, small);
  }

 private:
  int64_t dim() const {
    if constexpr (kDim > 0) return kDim;
    return dim_;
  }

  Index* list(int64_t parity, int64_t d) { return lists_.data() + (parity * dim() + d) * num_points_; }

  Scalar coord(Index point, int64_t d) const { return coords_[point * dim() + d]; }

  int64_t global_id(Index point) const { return first_id_ + (ids_ ? ids_[point] : point); }

  // Node [lo, hi) of the lists of parity `parity`; the children use the other parity.
  void split(int64_t lo, int64_t hi, int64_t parity, int64_t slot_lo, int64_t num_slots,
             SmallNodes<Scalar, kDim>& small) {
    const int64_t n = hi - lo;
    if (n <= kSmall) {
      small.build(coords_, n, list(parity, 0) + lo, num_points_, side_.data(),
                  [this](Index point) { return global_id(point); }, slot_lo, num_slots, out_);
      return;
    }
    const int64_t best = widest_dimension(dim(), [this, parity, lo, hi](int64_t d) {
      const Index* sorted = list(parity, d);
      return std::pair{coord(sorted[lo], d), coord(sorted[hi - 1], d)};
    });
    const auto [left_points, left_slots] = left_share(n, num_slots, out_.block_shift);
    const int64_t mid = lo + left_points;
    const Index* by_best = list(parity, best);
    Index* to_best = list(1 - parity, best);
    for (int64_t r = lo; r < hi; ++r) {  // the list of best keeps its order
      side_[by_best[r]] = r >= mid;
      to_best[r] = by_best[r];
    }
    for (int64_t d = 0; d < dim(); ++d) {
      if (d == best) continue;
      const Index* from = list(parity, d);
      Index* to = list(1 - parity, d);
      int64_t left = lo, right = mid;  // stable partition by side, branch-free (sides are coin flips)
      for (int64_t r = lo; r < hi; ++r) {
        const Index point = from[r];
        const int64_t goes_right = side_[point];
        to[left + ((right - left) & -goes_right)] = point;  // a select GCC would make a branch of
        left += 1 - goes_right;
        right += goes_right;
      }
    }
    split(lo, mid, 1 - parity, slot_lo, left_slots, small);
    split(mid, hi, 1 - parity, slot_lo + left_slots, num_slots - left_slots, small);
  }

  const Scalar* coords_;
  const Index* ids_;
  const int64_t num_points_, dim_, first_id_;
  const TreeOutput out_;
  Buffer<Index> lists_;   // [parity][d][rank along d] -> point
  Buffer<uint8_t> side_;  // [point] scratch: child of a split, point of a small node
};

// The tree of a graph of more than kLocal points: its rows (coordinates and id within the
// graph) are copied, and nodes above kLocal points are split in place by selection; their
// subtrees, disjoint ranges of rows, are built by OpenMP tasks.
template <class Scalar, int kDim, class Index>
class RowTree {
 public:
  RowTree(const Scalar* coords, int64_t num_points, int64_t dim, int64_t first_id, TreeOutput out)
      : coords_(coords + first_id * dim, coords + (first_id + num_points) * dim),
        ids_(num_points),
        num_points_(num_points),
        dim_(dim),
        first_id_(first_id),
        out_(out) {
    std::iota(ids_.begin(), ids_.end(), Index{0});
  }

  void build(int64_t slot_lo, int64_t num_slots) {
#pragma omp taskgroup  // the tasks work on this object's rows
    split(0, num_points_, slot_lo, num_slots);
  }

 private:
  static constexpr int64_t kSampleThreshold = 256;

  int64_t dim() const {
    if constexpr (kDim > 0) return kDim;
    return dim_;
  }

  void split(int64_t lo, int64_t hi, int64_t slot_lo, int64_t num_slots) {
    const int64_t n = hi - lo;
    if (n <= kLocal) {
      SortedTree<Scalar, kDim, Index>(&coords_[lo * dim()], n, dim(), &ids_[lo], first_id_, out_)
          .build(slot_lo, num_slots);
      return;
    }
    const auto [left_points, left_slots] = left_share(n, num_slots, out_.block_shift);
    const int64_t mid = lo + left_points;
    select(lo, hi, mid, split_dimension(lo, hi));
#pragma omp task default(none) firstprivate(lo, mid, slot_lo, left_slots)
    split(lo, mid, slot_lo, left_slots);
    split(mid, hi, slot_lo + left_slots, num_slots - left_slots);
  }

  // (coordinate along d, id) of row a is smaller than that of row b.
  bool less(int64_t a, int64_t b, int64_t d) const {
    const Scalar va = coords_[a * dim() + d], vb = coords_[b * dim() + d];
    return va < vb || (va == vb && ids_[a] < ids_[b]);
  }

  void swap_rows(int64_t a, int64_t b) {
    std::swap_ranges(&coords_[a * dim()], &coords_[a * dim()] + dim(), &coords_[b * dim()]);
    std::swap(ids_[a], ids_[b]);
  }

  // One pass over the rows, all dimensions at once.
  int64_t split_dimension(int64_t lo, int64_t hi) const {
    Buffer<Scalar> low(&coords_[lo * dim()], &coords_[lo * dim()] + dim()), high(low);
    for (int64_t row = lo + 1; row < hi; ++row) {
      for (int64_t d = 0; d < dim(); ++d) {
        low[d] = std::min(low[d], coords_[row * dim() + d]);
        high[d] = std::max(high[d], coords_[row * dim() + d]);
      }
    }
    return widest_dimension(dim(), [&low, &high](int64_t d) { return std::pair{low[d], high[d]}; });
  }

  // Rearranges rows [lo, hi) so that [lo, mid) holds the mid - lo smallest keys along d.
  void select(int64_t lo, int64_t hi, int64_t mid, int64_t d) {
    // Median-of-three needs ~2 log2(n) rounds on any realistic input; past a generous cap the
    // input is adversarial, and sorting what is left keeps the worst case at O(n log n).
    int64_t rounds = 0, max_rounds = 16;
    for (int64_t size = hi - lo; size > 1; size /= 2) max_rounds += 4;
    while (hi - lo > 3) {
      if (++rounds > max_rounds) {
        sort_rows(lo, hi, d);
        return;
      }
      const int64_t pivot = hi - lo > kSampleThreshold ? sample_pivot(lo, hi, mid, d)
                                                       : median_of_three(lo, lo + (hi - lo) / 2, hi - 1, d);
      const int64_t position = partition_around(lo, hi, pivot, d);
      if (mid == position) return;
      if (mid < position) {
        hi = position;
      } else {
        lo = position + 1;
      }
    }
    for (int64_t i = lo + 1; i < hi; ++i) {
      for (int64_t j = i; j > lo && less(j, j - 1, d); --j) swap_rows(j, j - 1);
    }
  }

  // A pivot whose rank is close to mid's: the element of the same relative rank in an evenly
  // spaced sample of ~sqrt(n) rows. It leaves the target in a part of size O(n^0.75) after
  // one or two passes, about 1.5 n work for a median instead of ~2.75 n with median-of-three.
  int64_t sample_pivot(int64_t lo, int64_t hi, int64_t mid, int64_t d) const {
    const int64_t n = hi - lo;
    int64_t size = 1;
    while (size * size < n) ++size;
    std::vector<int64_t> sample(size);
    for (int64_t k = 0; k < size; ++k) sample[k] = lo + (2 * k + 1) * n / (2 * size);
    const int64_t rank = std::min(size - 1, (mid - lo) * size / n);
    std::nth_element(sample.begin(), sample.begin() + rank, sample.end(),
                     [&](int64_t a, int64_t b) { return less(a, b, d); });
    return sample[rank];
  }

  int64_t median_of_three(int64_t a, int64_t b, int64_t c, int64_t d) const {
    if (less(a, b, d)) {
      if (less(b, c, d)) return b;
      return less(a, c, d) ? c : a;
    }
    if (less(a, c, d)) return a;
    return less(b, c, d) ? c : b;
  }

  // Moves the pivot row to its sorted position p within [lo, hi) and returns p: keys in
  // [lo, p) are smaller, keys in (p, hi) larger. Lomuto's scheme with an unconditional swap
  // and a data-dependent increment, so the loop has no unpredictable branch (the comparisons
  // of a median split are coin flips).
  int64_t partition_around(int64_t lo, int64_t hi, int64_t pivot_row, int64_t d) {
    swap_rows(pivot_row, hi - 1);
    const Scalar pivot_value = coords_[(hi - 1) * dim() + d];
    const Index pivot_id = ids_[hi - 1];
    int64_t store = lo;
    for (int64_t row = lo; row < hi - 1; ++row) {
      const Scalar v = coords_[row * dim() + d];
      const bool smaller = (v < pivot_value) | ((v == pivot_value) & (ids_[row] < pivot_id));
      swap_rows(store, row);
      store += smaller;
    }
    swap_rows(store, hi - 1);
    return store;
  }

  void sort_rows(int64_t lo, int64_t hi, int64_t d) {
    std::vector<int64_t> order(hi - lo);
    std::iota(order.begin(), order.end(), lo);
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return less(a, b, d); });
    Buffer<Scalar> coords(order.size() * dim());
    Buffer<Index> ids(order.size());
    for (size_t k = 0; k < order.size(); ++k) {
      std::copy_n(&coords_[order[k] * dim()], dim(), &coords[k * dim()]);
      ids[k] = ids_[order[k]];
    }
    std::copy(coords.begin(), coords.end(), &coords_[lo * dim()]);
    std::copy(ids.begin(), ids.end(), &ids_[lo]);
  }

  Buffer<Scalar> coords_;  // [row][d]
  Buffer<Index> ids_;      // [row] -> id within the graph
  const int64_t num_points_, dim_, first_id_;
  const TreeOutput out_;
};

template <class Scalar, int kDim, class Index>
void build_ball_trees_dim(const Scalar* coords, int64_t dim, const int64_t* node_ptr, const int64_t* slot_ptr,
                          int64_t num_graphs, TreeOutput out) {
#pragma omp parallel for schedule(dynamic, 1) default(none) shared(coords, dim, node_ptr, slot_ptr, num_graphs, out) \
    if (node_ptr[num_graphs] - node_ptr[0] >= kSerialPoints)
  for (int64_t g = 0; g < num_graphs; ++g) {
    const int64_t num_points = node_ptr[g + 1] - node_ptr[g];
    if (num_points == 0) {
      continue;
    } else if (num_points <= kLocal) {
      SortedTree<Scalar, kDim, Index>(coords + node_ptr[g] * dim, num_points, dim, nullptr, node_ptr[g], out)
          .build(slot_ptr[g], slot_ptr[g + 1] - slot_ptr[g]);
    } else {
      RowTree<Scalar, kDim, Index>(coords, num_points, dim, node_ptr[g], out)
          .build(slot_ptr[g], slot_ptr[g + 1] - slot_ptr[g]);
    }
  }
}

template <class Scalar, int kDim>
void build_ball_trees_index(const Scalar* coords, int64_t dim, const int64_t* node_ptr, const int64_t* slot_ptr,
                            int64_t num_graphs, TreeOutput out) {
  int64_t largest = 0;
  for (int64_t g = 0; g < num_graphs; ++g) largest = std::max(largest, node_ptr[g + 1] - node_ptr[g]);
  if (largest <= INT32_MAX) {  // half the bytes to move in every pass
    build_ball_trees_dim<Scalar, kDim, int32_t>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
  } else {
    build_ball_trees_dim<Scalar, kDim, int64_t>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
  }
}

// Fills index[slot] (point id, global) and mask[slot] for every slot of every graph; blocks
// (see left_share) have 2^block_shift slots. Every node must get at least one point, which the
// bindings check up front (pow2 or compact padding).
template <class Scalar>
void build_ball_trees(const Scalar* coords, int64_t dim, const int64_t* node_ptr, const int64_t* slot_ptr,
                      int64_t num_graphs, int block_shift, int64_t* index, bool* mask) {
  const TreeOutput out{index, mask, block_shift};
  switch (dim) {
    case 1: return build_ball_trees_index<Scalar, 1>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
    case 2: return build_ball_trees_index<Scalar, 2>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
    case 3: return build_ball_trees_index<Scalar, 3>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
    default: return build_ball_trees_index<Scalar, 0>(coords, dim, node_ptr, slot_ptr, num_graphs, out);
  }
}

}  // namespace erwin
