// Python bindings of the ball-tree engine and of the ball-attention and edge-message kernels:
// torch_geometric_erwin._C.
// Inputs are validated in Python (torch_geometric_erwin/tree/validation.py and the layers of
// torch_geometric_erwin/nn); the checks here only protect memory safety. all_finite, batch_ptr and
// slot_ptr serve the checks and offsets of the build path, each in one pass
// (torch_geometric_erwin/tree/engine.py has their fallbacks).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "ball_attention.h"
#include "ball_tree.h"
#include "edge_messages.h"
#include "neighbour_search.h"
#include "rms_norm.h"
#include "swiglu.h"

namespace py = pybind11;

using IndexArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// A pos array that is not C-contiguous is copied into one first.
template <class Scalar>
static void build(py::array pos, const int64_t* nodes, const int64_t* slots, int64_t num_graphs,
                  int block_shift, int64_t* index, bool* mask) {
  const auto coords = py::array_t<Scalar, py::array::c_style>::ensure(pos);
  py::gil_scoped_release release;
  erwin::build_ball_trees(coords.data(), coords.shape(1), nodes, slots, num_graphs, block_shift, index, mask);
}

static py::tuple partition(py::array pos, IndexArray node_ptr, IndexArray slot_ptr, int64_t block_size) {
  if (pos.ndim() != 2) throw std::invalid_argument("pos must be [num_points, dim]");
  if (node_ptr.ndim() != 1 || slot_ptr.ndim() != 1 || node_ptr.size() != slot_ptr.size() ||
      node_ptr.size() < 2) {
    throw std::invalid_argument("node_ptr and slot_ptr must be 1-D of equal length >= 2");
  }
  if (block_size < 1 || (block_size & (block_size - 1)) != 0) {
    throw std::invalid_argument("block_size must be a power of two");
  }
  int block_shift = 0;
  while (int64_t{1} << block_shift < block_size) ++block_shift;
  const int64_t num_graphs = node_ptr.size() - 1;
  const int64_t* nodes = node_ptr.data();
  const int64_t* slots = slot_ptr.data();
  if (nodes[0] != 0 || slots[0] != 0) throw std::invalid_argument("node_ptr and slot_ptr must start at 0");
  if (nodes[num_graphs] != pos.shape(0)) throw std::invalid_argument("node_ptr[-1] != num_points");
  for (int64_t g = 0; g < num_graphs; ++g) {
    const int64_t n = nodes[g + 1] - nodes[g], s = slots[g + 1] - slots[g];
    // A node over k blocks gives floor(k/2) of them and floor(n floor(k/2) / k) of its points to
    // the left child. Every child keeps a point if k is a power of two (pow2 padding) or the
    // points fill the blocks as compact padding does, n > (k - 1) * block_size.
    const int64_t blocks = s / block_size;
    const bool fills_blocks = s <= block_size || (s % block_size == 0 && ((blocks & (blocks - 1)) == 0 ||
                                                                          n > (blocks - 1) * block_size));
    if (n < 0 || s < n || (n == 0 && s != 0) || (n > 0 && s < 1) || !fills_blocks) {
      throw std::invalid_argument("graph " + std::to_string(g) + " has " + std::to_string(n) +
                                  " points but " + std::to_string(s) + " slots");
    }
  }
  const int64_t num_slots = slots[num_graphs];
  py::array_t<int64_t> index(num_slots);
  py::array_t<bool> mask(num_slots);
  if (py::isinstance<py::array_t<float>>(pos)) {
    build<float>(pos, nodes, slots, num_graphs, block_shift, index.mutable_data(), mask.mutable_data());
  } else if (py::isinstance<py::array_t<double>>(pos)) {
    build<double>(pos, nodes, slots, num_graphs, block_shift, index.mutable_data(), mask.mutable_data());
  } else {
    throw std::invalid_argument("pos must be float32 or float64");
  }
  return py::make_tuple(index, mask);
}

// No entry has the exponent of an infinity (all ones, also NaN's). Branch-free, so it vectorises.
template <class Scalar, class Bits>
static bool all_finite_as(const py::array& values) {
  const auto array = py::array_t<Scalar, py::array::c_style | py::array::forcecast>::ensure(values);
  const Scalar infinity = std::numeric_limits<Scalar>::infinity();
  Bits exponent, bits, bad = 0;
  std::memcpy(&exponent, &infinity, sizeof exponent);
  const Scalar* data = array.data();
  const py::ssize_t size = array.size();
  for (py::ssize_t i = 0; i < size; ++i) {
    std::memcpy(&bits, data + i, sizeof bits);
    bad |= (bits & exponent) == exponent;
  }
  return bad == 0;
}

static bool all_finite(const py::array& values) {
  if (py::isinstance<py::array_t<float>>(values)) return all_finite_as<float, uint32_t>(values);
  if (py::isinstance<py::array_t<double>>(values)) return all_finite_as<double, uint64_t>(values);
  throw std::invalid_argument("values must be float32 or float64");
}

// (0, node offsets [B + 1]) of a batch vector (graph id of every node, B = last id + 1; graph g
// starts at the first node with an id >= g), or (1, None) if an id is negative, else (2, None)
// if the ids are not sorted: the codes of tree/engine.py's BATCH_OK, BATCH_NEGATIVE, BATCH_UNSORTED.
static py::tuple batch_ptr(const IndexArray& batch) {
  const int64_t* ids = batch.data();
  const int64_t n = batch.size();
  // Sign bits, branch-free so that the loop vectorises: of the ids (any negative one), and of
  // the steps (any descent, as long as no id is negative).
  uint64_t signs = n > 0 ? uint64_t(ids[0]) : 0, steps = 0;
  for (int64_t i = 1; i < n; ++i) {
    signs |= uint64_t(ids[i]);
    steps |= uint64_t(ids[i]) - uint64_t(ids[i - 1]);
  }
  if ((signs | steps) >> 63) return py::make_tuple(signs >> 63 ? 1 : 2, py::none());
  IndexArray ptr(n == 0 ? 1 : ids[n - 1] + 2);
  int64_t* out = ptr.mutable_data();
  int64_t g = 0;
  for (int64_t i = 0; i < n; ++i) {
    while (g <= ids[i]) out[g++] = i;
  }
  out[g] = n;
  return py::make_tuple(0, ptr);
}

// Slot offsets [B + 1]: per graph of n > 0 nodes the smallest power of two >= max(n, grain)
// (pow2 padding) or the smallest multiple of grain >= n (compact padding); none when n = 0.
static IndexArray slot_ptr(const IndexArray& node_ptr, bool pow2, int64_t grain) {
  const int64_t* nodes = node_ptr.data();
  IndexArray ptr(node_ptr.size());
  int64_t* out = ptr.mutable_data();
  out[0] = 0;
  for (py::ssize_t g = 1; g < node_ptr.size(); ++g) {
    const int64_t n = nodes[g] - nodes[g - 1];
    int64_t slots = 0;
    if (n > 0 && pow2) {
      for (slots = 1; slots < std::max(n, grain);) slots *= 2;
    } else if (n > 0) {
      slots = (n + grain - 1) / grain * grain;
    }
    out[g] = out[g - 1] + slots;
  }
  return ptr;
}

template <class Scalar>
static py::array_t<int64_t> search(py::array pos, const int64_t* nodes, int64_t num_graphs, int64_t count,
                                   double radius_sq, bool loop, int threads) {
  const auto coords = py::array_t<Scalar, py::array::c_style>::ensure(pos);
  py::array_t<int64_t> edges;
  {
    py::gil_scoped_release release;
    erwin::neighbour_search(coords.data(), coords.shape(1), nodes, num_graphs, count, radius_sq, loop, threads,
                            [&edges](int64_t size) {
                              py::gil_scoped_acquire acquire;  // to create the array, once
                              edges = py::array_t<int64_t>({int64_t{2}, size});
                              return edges.mutable_data();
                            });
  }
  return edges;
}

static py::array_t<int64_t> neighbour_search(py::array pos, const IndexArray& node_ptr, int64_t count,
                                             double radius_sq, bool loop, int threads) {
  if (pos.ndim() != 2 || pos.shape(1) < 1) throw std::invalid_argument("pos must be [num_points, dim >= 1]");
  if (node_ptr.ndim() != 1 || node_ptr.size() < 2) throw std::invalid_argument("node_ptr must be 1-D, length >= 2");
  const int64_t num_graphs = node_ptr.size() - 1;
  const int64_t* nodes = node_ptr.data();
  if (nodes[0] != 0 || nodes[num_graphs] != pos.shape(0) || !std::is_sorted(nodes, nodes + num_graphs + 1)) {
    throw std::invalid_argument("node_ptr must run from 0 to num_points, non-decreasing");
  }
  if (count < 1) throw std::invalid_argument("count must be >= 1");
  if (py::isinstance<py::array_t<float>>(pos)) {
    return search<float>(pos, nodes, num_graphs, count, radius_sq, loop, threads);
  }
  if (py::isinstance<py::array_t<double>>(pos)) {
    return search<double>(pos, nodes, num_graphs, count, radius_sq, loop, threads);
  }
  throw std::invalid_argument("pos must be float32 or float64");
}

using FloatArray = py::array_t<float, py::array::c_style>;
using MaskArray = py::array_t<uint8_t, py::array::c_style>;

struct AttentionShape {
  int64_t balls, heads, m, head_width, dims;
};

// The shape of the attention, from rel_pos [balls * m, dims], the ball size m, sigma [heads] and the
// first of like_out [balls * m, heads * E], after checking that every array has the size the kernels
// will address.
static AttentionShape attention_shape(const std::vector<const FloatArray*>& like_qkv,
                                      const std::vector<const FloatArray*>& like_out, const FloatArray& sigma,
                                      const FloatArray& rel_pos, int64_t m, const std::optional<MaskArray>& hidden,
                                      const FloatArray& lse, const FloatArray* grad_sigma_parts) {
  const FloatArray& out = *like_out.front();
  if (rel_pos.ndim() != 2 || rel_pos.shape(1) < 1 || out.ndim() != 2 || sigma.size() < 1 ||
      out.shape(1) % sigma.size() != 0 || m < erwin::kRows || m % erwin::kRows != 0 || out.shape(0) % m != 0) {
    throw std::invalid_argument("ball attention: rel_pos must be [balls * m, dims], out [balls * m, heads * E], "
                                "m a positive multiple of 4");
  }
  const AttentionShape s{out.shape(0) / m, sigma.size(), m, out.shape(1) / sigma.size(), rel_pos.shape(1)};
  const auto has_shape = [](const FloatArray* array, int64_t rows, int64_t columns) {
    return array->ndim() == 2 && array->shape(0) == rows && array->shape(1) == columns;
  };
  bool ok = rel_pos.shape(0) == s.balls * s.m && (!hidden || hidden->size() == s.balls * s.m) &&
            lse.size() == s.balls * s.heads * s.m &&
            (!grad_sigma_parts || grad_sigma_parts->size() == s.balls * s.heads);
  for (const FloatArray* array : like_qkv) ok = ok && has_shape(array, s.balls * s.m, 3 * s.heads * s.head_width);
  for (const FloatArray* array : like_out) ok = ok && has_shape(array, s.balls * s.m, s.heads * s.head_width);
  if (!ok) throw std::invalid_argument("ball attention: inconsistent shapes");
  return s;
}

// The widths a kernel is compiled for. dispatch calls kernel(std::integral_constant<int, W>) for
// the W that equals width and throws, naming them, if none does; values() feeds capabilities().
template <int... Widths>
struct CompiledWidths {
  static std::vector<int> values() { return {Widths...}; }

  template <class Kernel>
  static void dispatch(int64_t width, const char* what, Kernel&& kernel) {
    const bool found = ((width == Widths && (kernel(std::integral_constant<int, Widths>{}), true)) || ...);
    if (!found) {
      std::string message = std::string(what) + " must be one of";
      for (int value : values()) message += " " + std::to_string(value);
      throw std::invalid_argument(message + ", got " + std::to_string(width));
    }
  }
};

// The head widths E of the attention kernels and the channel counts C of the edge-message kernels.
using HeadWidths = CompiledWidths<4, 8, 16, 32, 64>;
using EdgeChannels = CompiledWidths<16, 32, 64, 128, 256>;
constexpr int kMaxEdgeDimensions = 4;

template <class Kernel>
static void with_head_width(int64_t head_width, Kernel&& kernel) {
  HeadWidths::dispatch(head_width, "ball attention: head width", kernel);
}

template <class Kernel>
static void with_channels(int64_t channels, Kernel&& kernel) {
  EdgeChannels::dispatch(channels, "edge messages: channels", kernel);
}

// What each kernel of this build accepts, read by torch_geometric_erwin.ops instead of copies of
// these constants in Python.
static py::dict capabilities() {
  py::dict table, attention, edges;
  attention["head_widths"] = HeadWidths::values();
  attention["ball_size_multiple"] = erwin::kRows;
  attention["dtypes"] = std::vector<std::string>{"float32"};
  edges["channels"] = EdgeChannels::values();
  edges["max_dimensions"] = kMaxEdgeDimensions;
  edges["dtypes"] = std::vector<std::string>{"float32"};
  table["ball_attention"] = attention;
  table["edge_messages"] = edges;
  table["rms_norm"] = py::dict(py::arg("dtypes") = std::vector<std::string>{"float32"});
  table["swiglu"] = py::dict(py::arg("dtypes") = std::vector<std::string>{"float32"});
  table["tree"] = py::dict(py::arg("dtypes") = std::vector<std::string>{"float32", "float64"});
  table["neighbour_search"] = py::dict(py::arg("dtypes") = std::vector<std::string>{"float32", "float64"});
#ifdef _OPENMP
  table["openmp"] = true;
#else
  table["openmp"] = false;
#endif
  return table;
}

static const uint8_t* data_or_null(const std::optional<MaskArray>& hidden) {
  return hidden ? hidden->data() : nullptr;
}

static void ball_attention_forward(const FloatArray& qkv, const FloatArray& sigma, const FloatArray& rel_pos,
                                   int64_t ball_size, const std::optional<MaskArray>& hidden, FloatArray& out,
                                   FloatArray& lse, int threads) {
  const AttentionShape s = attention_shape({&qkv}, {&out}, sigma, rel_pos, ball_size, hidden, lse, nullptr);
  py::gil_scoped_release release;
  with_head_width(s.head_width, [&](auto width) {
    erwin::ball_attention_forward<decltype(width)::value>(qkv.data(), sigma.data(), rel_pos.data(), s.dims,
                                                          data_or_null(hidden), s.balls, s.heads, s.m, threads,
                                                          out.mutable_data(), lse.mutable_data());
  });
}

static void ball_attention_backward(const FloatArray& qkv, const FloatArray& sigma, const FloatArray& rel_pos,
                                    int64_t ball_size, const std::optional<MaskArray>& hidden,
                                    const FloatArray& out, const FloatArray& lse, const FloatArray& grad_out,
                                    FloatArray& grad_qkv, FloatArray& grad_sigma_parts, int threads) {
  const AttentionShape s = attention_shape({&qkv, &grad_qkv}, {&out, &grad_out}, sigma, rel_pos, ball_size, hidden,
                                           lse, &grad_sigma_parts);
  py::gil_scoped_release release;
  with_head_width(s.head_width, [&](auto width) {
    erwin::ball_attention_backward<decltype(width)::value>(
        qkv.data(), sigma.data(), rel_pos.data(), s.dims, data_or_null(hidden), out.data(), lse.data(), grad_out.data(),
        s.balls, s.heads, s.m, threads, grad_qkv.mutable_data(), grad_sigma_parts.mutable_data());
  });
}

using EdgeArray = py::array_t<int64_t, py::array::c_style>;

// Memory safety of the edge kernels: ids in [0, bound), and ptr from 0 to edges, non-decreasing.
static void check_edges(const EdgeArray& ids, int64_t bound) {
  const int64_t* data = ids.data();
  if (!std::all_of(data, data + ids.size(), [bound](int64_t id) { return id >= 0 && id < bound; })) {
    throw std::invalid_argument("edge messages: node or edge id out of range");
  }
}

static void check_ptr(const EdgeArray& ptr, int64_t edges) {
  const int64_t* data = ptr.data();
  if (data[0] != 0 || data[ptr.size() - 1] != edges || !std::is_sorted(data, data + ptr.size())) {
    throw std::invalid_argument("edge messages: ptr must run from 0 to the edge count, non-decreasing");
  }
}

// The layer's per-node terms and weights, after checking their sizes against per_source [nodes, C]
// and offset_weight [D, C].
static erwin::EdgeLayer edge_layer(const FloatArray& per_source, const FloatArray& per_target,
                                   const FloatArray& offset_weight, const FloatArray& gamma, const FloatArray& beta,
                                   float eps) {
  if (per_source.ndim() != 2 || offset_weight.ndim() != 2) {
    throw std::invalid_argument("edge messages: per_source and offset_weight must be 2-D");
  }
  const int64_t nodes = per_source.shape(0), channels = per_source.shape(1), dims = offset_weight.shape(0);
  if (per_target.size() != nodes * channels || offset_weight.shape(1) != channels || gamma.size() != channels ||
      beta.size() != channels || dims < 1 || dims > kMaxEdgeDimensions) {
    throw std::invalid_argument("edge messages: inconsistent shapes (or more than 4 dimensions)");
  }
  return {per_source.data(), per_target.data(), offset_weight.data(), gamma.data(), beta.data(), nodes, dims, eps};
}

// An edge list of the layer's graph, after checking its sizes and that node ids and ptr stay in range.
static erwin::EdgeList edge_list(const erwin::EdgeLayer& layer, const EdgeArray& source, const EdgeArray& target,
                                 const FloatArray& offset, const EdgeArray& ptr) {
  const int64_t edges = source.size();
  if (target.size() != edges || offset.size() != edges * layer.dims || ptr.size() != layer.nodes + 1) {
    throw std::invalid_argument("edge messages: inconsistent shapes");
  }
  check_edges(source, layer.nodes);
  check_edges(target, layer.nodes);
  check_ptr(ptr, edges);
  return {source.data(), target.data(), offset.data(), ptr.data()};
}

static void edge_messages_forward(const FloatArray& per_source, const FloatArray& per_target,
                                  const FloatArray& offset_weight, const FloatArray& gamma, const FloatArray& beta,
                                  float eps, const EdgeArray& source, const EdgeArray& target,
                                  const FloatArray& offset, const EdgeArray& target_ptr, FloatArray& summed,
                                  int threads) {
  const erwin::EdgeLayer layer = edge_layer(per_source, per_target, offset_weight, gamma, beta, eps);
  const erwin::EdgeList by_target = edge_list(layer, source, target, offset, target_ptr);
  if (summed.size() != per_source.size()) throw std::invalid_argument("edge messages: inconsistent shapes");
  py::gil_scoped_release release;
  with_channels(per_source.shape(1), [&](auto width) {
    erwin::edge_messages_forward<decltype(width)::value>(layer, by_target, threads, summed.mutable_data());
  });
}

static void edge_messages_backward(const FloatArray& per_source, const FloatArray& per_target,
                                   const FloatArray& offset_weight, const FloatArray& gamma, const FloatArray& beta,
                                   float eps, const EdgeArray& source, const EdgeArray& target,
                                   const FloatArray& offset, const EdgeArray& target_ptr,
                                   const EdgeArray& source_by_source, const EdgeArray& target_by_source,
                                   const FloatArray& offset_by_source, const EdgeArray& source_ptr,
                                   const FloatArray& grad_summed, FloatArray& grad_per_source,
                                   FloatArray& grad_per_target, FloatArray& grad_parts, int threads) {
  const erwin::EdgeLayer layer = edge_layer(per_source, per_target, offset_weight, gamma, beta, eps);
  const erwin::EdgeList by_target = edge_list(layer, source, target, offset, target_ptr);
  const erwin::EdgeList by_source = edge_list(layer, source_by_source, target_by_source, offset_by_source, source_ptr);
  const int64_t size = per_source.size();
  if (grad_summed.size() != size || grad_per_source.size() != size || grad_per_target.size() != size ||
      grad_parts.size() != size * (1 + layer.dims) || source_by_source.size() != source.size()) {
    throw std::invalid_argument("edge messages: inconsistent shapes");
  }
  py::gil_scoped_release release;
  with_channels(per_source.shape(1), [&](auto width) {
    erwin::edge_messages_backward<decltype(width)::value>(layer, by_target, by_source, grad_summed.data(), threads,
                                                          grad_per_source.mutable_data(),
                                                          grad_per_target.mutable_data(), grad_parts.mutable_data());
  });
}

static void rms_norm_forward(const FloatArray& x, const FloatArray& weight, float eps, FloatArray& y,
                             FloatArray& inverse_rms, int threads) {
  if (x.ndim() != 2 || weight.size() != x.shape(1) || y.size() != x.size() || inverse_rms.size() != x.shape(0)) {
    throw std::invalid_argument("rms norm: inconsistent shapes");
  }
  py::gil_scoped_release release;
  erwin::rms_norm_forward(x.data(), weight.data(), x.shape(0), x.shape(1), eps, threads, y.mutable_data(),
                          inverse_rms.mutable_data());
}

static void rms_norm_backward(const FloatArray& x, const FloatArray& weight, const FloatArray& inverse_rms,
                              const FloatArray& grad_y, FloatArray& grad_x, FloatArray& grad_weight, int threads) {
  if (x.ndim() != 2 || weight.size() != x.shape(1) || inverse_rms.size() != x.shape(0) ||
      grad_y.size() != x.size() || grad_x.size() != x.size() || grad_weight.size() != weight.size()) {
    throw std::invalid_argument("rms norm: inconsistent shapes");
  }
  const int64_t blocks = (x.shape(0) + erwin::kBlockRows - 1) / erwin::kBlockRows;
  std::vector<float> parts(blocks * x.shape(1));
  py::gil_scoped_release release;
  erwin::rms_norm_backward(x.data(), weight.data(), inverse_rms.data(), grad_y.data(), x.shape(0), x.shape(1),
                           threads, grad_x.mutable_data(), parts.data(), grad_weight.mutable_data());
}

static void swiglu_backward(const FloatArray& gate_value, const FloatArray& grad_gated, FloatArray& gated,
                            FloatArray& grad_gate_value, int threads) {
  if (grad_gated.ndim() != 2 || gate_value.ndim() != 2 || gate_value.shape(0) != grad_gated.shape(0) ||
      gate_value.shape(1) != 2 * grad_gated.shape(1) || gated.size() != grad_gated.size() ||
      grad_gate_value.size() != gate_value.size()) {
    throw std::invalid_argument("swiglu backward: inconsistent shapes");
  }
  py::gil_scoped_release release;
  erwin::swiglu_backward(gate_value.data(), grad_gated.data(), grad_gated.shape(0), grad_gated.shape(1), threads,
                         gated.mutable_data(), grad_gate_value.mutable_data());
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "C++/OpenMP ball-tree engine of torch_geometric_erwin";
  m.def("capabilities", &capabilities, "What each kernel of this build accepts (widths, dtypes) and whether "
        "it has OpenMP.");
  m.def("partition", &partition, py::arg("pos"), py::arg("node_ptr"), py::arg("slot_ptr"),
        py::arg("block_size"),
        "Ball-tree slot assignment of a ragged batch (pos float32 or float64, any strides): "
        "returns (index [S] int64, mask [S] bool).");
  m.def("all_finite", &all_finite, py::arg("values"), "Whether a float32 or float64 array has no NaN or Inf.");
  m.def("batch_ptr", &batch_ptr, py::arg("batch"),
        "(0, node offsets) of a sorted, non-negative batch vector, else (1, None) for a negative id "
        "or (2, None) for unsorted ids.");
  m.def("slot_ptr", &slot_ptr, py::arg("node_ptr"), py::arg("pow2"), py::arg("grain"),
        "Slot offsets of the graphs: pow2 or compact padding to the granularity.");
  m.def("neighbour_search", &neighbour_search, py::arg("pos"), py::arg("node_ptr"), py::arg("count"),
        py::arg("radius_sq"), py::arg("loop"), py::arg("threads"),
        "Exact neighbours in a ragged batch (csrc/neighbour_search.h): per node, the count nearest nodes of its "
        "graph with squared distance <= radius_sq, ties by index; returns edge_index [2, E] int64 (row 0 the "
        "neighbour, row 1 the centre, by centre then neighbour index).");
  m.def("ball_attention_forward", &ball_attention_forward, py::arg("qkv").noconvert(), py::arg("sigma").noconvert(),
        py::arg("rel_pos").noconvert(), py::arg("ball_size"), py::arg("hidden").noconvert().none(true),
        py::arg("out").noconvert(), py::arg("lse").noconvert(), py::arg("threads"),
        "Ball attention of float32 qkv [balls * m, (three heads E)] with the distances of the balls' positions "
        "rel_pos [balls * m, dims] (csrc/ball_attention.h): writes out [balls * m, (heads E)] and the rows' "
        "log-sum-exp lse [balls, heads, m].");
  m.def("ball_attention_backward", &ball_attention_backward, py::arg("qkv").noconvert(),
        py::arg("sigma").noconvert(), py::arg("rel_pos").noconvert(), py::arg("ball_size"),
        py::arg("hidden").noconvert().none(true), py::arg("out").noconvert(), py::arg("lse").noconvert(),
        py::arg("grad_out").noconvert(), py::arg("grad_qkv").noconvert(), py::arg("grad_sigma_parts").noconvert(),
        py::arg("threads"),
        "Gradients of ball attention: writes grad_qkv and grad_sigma_parts [balls, heads].");
  m.def("edge_messages_forward", &edge_messages_forward, py::arg("per_source").noconvert(),
        py::arg("per_target").noconvert(), py::arg("offset_weight").noconvert(), py::arg("gamma").noconvert(),
        py::arg("beta").noconvert(), py::arg("eps"), py::arg("source").noconvert(), py::arg("target").noconvert(),
        py::arg("offset").noconvert(), py::arg("target_ptr").noconvert(), py::arg("summed").noconvert(),
        py::arg("threads"),
        "The embedding's messages of float32 per-node terms, summed per target (csrc/edge_messages.h), the "
        "edges grouped by target: writes summed [nodes, C].");
  m.def("edge_messages_backward", &edge_messages_backward, py::arg("per_source").noconvert(),
        py::arg("per_target").noconvert(), py::arg("offset_weight").noconvert(), py::arg("gamma").noconvert(),
        py::arg("beta").noconvert(), py::arg("eps"), py::arg("source").noconvert(), py::arg("target").noconvert(),
        py::arg("offset").noconvert(), py::arg("target_ptr").noconvert(), py::arg("source_by_source").noconvert(),
        py::arg("target_by_source").noconvert(), py::arg("offset_by_source").noconvert(),
        py::arg("source_ptr").noconvert(), py::arg("grad_summed").noconvert(),
        py::arg("grad_per_source").noconvert(), py::arg("grad_per_target").noconvert(),
        py::arg("grad_parts").noconvert(), py::arg("threads"),
        "Gradients of the embedding's summed messages, given the edges grouped by target and by source: writes "
        "grad_per_source, grad_per_target and grad_parts [nodes, (1 + D) C] (per target, the partial gradients "
        "of the LayerNorm weight and of W_p^T).");
  m.def("swiglu_backward", &swiglu_backward, py::arg("gate_value").noconvert(), py::arg("grad_gated").noconvert(),
        py::arg("gated").noconvert(), py::arg("grad_gate_value").noconvert(), py::arg("threads"),
        "The elementwise backward pass of SwiGLU (csrc/swiglu.h): writes the gated product and the gradient "
        "of the float32 pre-activations gate_value [rows, 2H] given that of the product, grad_gated [rows, H].");
  m.def("rms_norm_forward", &rms_norm_forward, py::arg("x").noconvert(), py::arg("weight").noconvert(),
        py::arg("eps"), py::arg("y").noconvert(), py::arg("inverse_rms").noconvert(), py::arg("threads"),
        "RMSNorm of the float32 rows of x [rows, C] (csrc/rms_norm.h): writes y and inverse_rms [rows].");
  m.def("rms_norm_backward", &rms_norm_backward, py::arg("x").noconvert(), py::arg("weight").noconvert(),
        py::arg("inverse_rms").noconvert(), py::arg("grad_y").noconvert(), py::arg("grad_x").noconvert(),
        py::arg("grad_weight").noconvert(), py::arg("threads"),
        "Gradients of RMSNorm: writes grad_x [rows, C] and grad_weight [C].");
}
