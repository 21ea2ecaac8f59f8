// Python bindings of the ball-tree engine: torch_geometric_erwin._C.
// Inputs are validated in Python (torch_geometric_erwin/tree/validation.py); the checks here
// only protect memory safety.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "ball_tree.h"

namespace py = pybind11;

using IndexArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

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
  if (!(pos.flags() & py::array::c_style)) throw std::invalid_argument("pos must be C-contiguous");
  if (py::isinstance<py::array_t<float>>(pos)) {
    build<float>(pos, nodes, slots, num_graphs, block_shift, index.mutable_data(), mask.mutable_data());
  } else if (py::isinstance<py::array_t<double>>(pos)) {
    build<double>(pos, nodes, slots, num_graphs, block_shift, index.mutable_data(), mask.mutable_data());
  } else {
    throw std::invalid_argument("pos must be float32 or float64");
  }
  return py::make_tuple(index, mask);
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "C++/OpenMP ball-tree engine of torch_geometric_erwin";
  m.def("partition", &partition, py::arg("pos"), py::arg("node_ptr"), py::arg("slot_ptr"),
        py::arg("block_size"),
        "Ball-tree slot assignment of a ragged batch (pos float32 or float64, C-contiguous): "
        "returns (index [S] int64, mask [S] bool).");
}
