// ClassesWriteSites(x, start, length, positions, values) -> y: y = x, then for every sample b
// of the batch (x's first dimension) and j < length[b]:
//     y[b].flat[positions[start[b] + j]] = values[start[b] + j]
// i.e. sample b gets the ragged site that starts at start[b] (length 0: untouched).
//
// Why a kernel of our own: TensorFlow's TensorScatterUpdate copies the whole tensor on CPU
// even to write one element (it only tries to forward its `updates` input), and an XLA program
// cannot write into a buffer it did not allocate. This kernel takes over x's buffer when
// TensorFlow's executor says nobody else holds it (forward_input_or_allocate_output, the same
// rule elementwise ops use), so the write costs only its entries; otherwise it copies first.
// It never changes a tensor that someone else can still see.
#include <cstdint>
#include <cstring>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Tensor;

REGISTER_OP("ClassesWriteSites")
    .Input("x: T")
    .Input("start: int32")
    .Input("length: int32")
    .Input("positions: int32")
    .Input("values: T")
    .Output("y: T")
    .Attr("T: {half, bfloat16, float, double}")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });

template <typename T>
class WriteSitesOp : public OpKernel {
 public:
  explicit WriteSitesOp(OpKernelConstruction* c) : OpKernel(c) {}

  void Compute(OpKernelContext* c) override {
    const Tensor& x = c->input(0);
    const Tensor& start = c->input(1);
    const Tensor& length = c->input(2);
    const Tensor& positions = c->input(3);
    const Tensor& values = c->input(4);
    OP_REQUIRES(c, x.dims() >= 1, absl::InvalidArgumentError("x needs a batch dimension"));
    const int64_t batch = x.dim_size(0);
    const int64_t n = x.NumElements();
    const int64_t per_sample = batch > 0 ? n / batch : 0;
    const int64_t total = positions.NumElements();
    OP_REQUIRES(c, start.dims() == 1 && length.dims() == 1 && start.dim_size(0) == batch &&
                       length.dim_size(0) == batch,
                absl::InvalidArgumentError("start and length need one entry per sample"));
    OP_REQUIRES(c, positions.dims() == 1 && values.dims() == 1 &&
                       values.NumElements() == total,
                absl::InvalidArgumentError("positions and values must be vectors of one length"));
    const int32_t* st = start.flat<int32_t>().data();
    const int32_t* len = length.flat<int32_t>().data();
    const int32_t* pos = positions.flat<int32_t>().data();
    for (int64_t b = 0; b < batch; ++b) {
      OP_REQUIRES(c, len[b] == 0 || (st[b] >= 0 && len[b] > 0 &&
                                     static_cast<int64_t>(st[b]) + len[b] <= total),
                  absl::InvalidArgumentError("ClassesWriteSites: site outside positions"));
      for (int32_t j = 0; j < len[b]; ++j) {
        const int32_t p = pos[st[b] + j];
        OP_REQUIRES(c, p >= 0 && p < per_sample,
                    absl::InvalidArgumentError("ClassesWriteSites: position out of range"));
      }
    }
    Tensor* y = nullptr;
    OP_REQUIRES_OK(c, c->forward_input_or_allocate_output({0}, 0, x.shape(), &y));
    T* out = y->flat<T>().data();
    const T* in = x.flat<T>().data();
    if (out != in && n > 0) std::memcpy(out, in, n * sizeof(T));
    const T* val = values.flat<T>().data();
    for (int64_t b = 0; b < batch; ++b) {
      T* row = out + b * per_sample;
      const int32_t* p = pos + st[b];
      const T* v = val + st[b];
      for (int32_t j = 0; j < len[b]; ++j) row[p[j]] = v[j];
    }
  }
};

#define REGISTER(T)                                                                   \
  REGISTER_KERNEL_BUILDER(                                                            \
      Name("ClassesWriteSites").Device(::tensorflow::DEVICE_CPU).TypeConstraint<T>("T"), \
      WriteSitesOp<T>)
REGISTER(Eigen::half);
REGISTER(Eigen::bfloat16);
REGISTER(float);
REGISTER(double);
#undef REGISTER

}  // namespace
