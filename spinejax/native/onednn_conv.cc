// spinejax's CPU 3D convolution: oneDNN's convolution primitives behind three XLA FFI handlers.
//
// Stride 1, SAME padding (odd kernels), float32, no groups: x [n, d, h, w, ci] (NDHWC), kernel
// [kd, kh, kw, ci, co] (DHWIO, flax's layout), y [n, d, h, w, co]. The activations stay in XLA's layout
// (oneDNN's ndhwc, what PyTorch's channels_last_3d uses); the kernel is reordered to the layout oneDNN picks.
// Loaded and wrapped with a custom VJP by spinejax/native/library.py and spinejax/conv.py.
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <unordered_map>

#include "dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;
using dt = dnnl::memory::data_type;

namespace {

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// Runs `work` and turns oneDNN's exceptions into an FFI error (XLA then fails the computation with its text).
ffi::Error Guarded(const std::function<void()>& work) {
  try {
    work();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(e.what());
  }
  return ffi::Error::Success();
}

struct Geometry {
  memory::dims src, weights, dst, strides{1, 1, 1}, pad_l, pad_r;
};

// x [n, d, h, w, ci], kernel [kd, kh, kw, ci, co] -> oneDNN's logical dims (NCDHW, OIDHW); false unless y (the
// output, or its cotangent) is [n, d, h, w, co], so no buffer is read or written past its end.
bool GeometryOf(ffi::Span<const int64_t> x, ffi::Span<const int64_t> k, ffi::Span<const int64_t> y, Geometry& g) {
  if (x.size() != 5 || k.size() != 5 || y.size() != 5 || x[4] != k[3]) return false;
  if (y[0] != x[0] || y[1] != x[1] || y[2] != x[2] || y[3] != x[3] || y[4] != k[4]) return false;
  g.src = {x[0], x[4], x[1], x[2], x[3]};
  g.weights = {k[4], k[3], k[0], k[1], k[2]};
  g.dst = {x[0], k[4], x[1], x[2], x[3]};
  for (int i = 0; i < 3; ++i) {
    g.pad_l.push_back((k[i] - 1) / 2);
    g.pad_r.push_back(k[i] / 2);
  }
  return true;
}

const char kShapeError[] =
    "spinejax onednn conv: expects x [n,d,h,w,ci], kernel [kd,kh,kw,ci,co] and y (or dy) [n,d,h,w,co]";

struct Primitives {
  dnnl::convolution_forward::primitive_desc fwd;
  dnnl::convolution_forward fwd_prim;
  dnnl::convolution_backward_data::primitive_desc bwd_data;
  dnnl::convolution_backward_data bwd_data_prim;
  dnnl::convolution_backward_weights::primitive_desc bwd_weights;
  dnnl::convolution_backward_weights bwd_weights_prim;
};

std::string Key(const Geometry& g) {
  std::string key;
  for (const auto& v : {g.src, g.weights}) for (auto d : v) key += std::to_string(d) + ",";
  return key;
}

// Primitive descriptors and primitives per geometry, made once (creating them costs more than small calls).
Primitives& PrimitivesOf(const Geometry& g) {
  static std::mutex mutex;
  static std::unordered_map<std::string, Primitives>* cache = new std::unordered_map<std::string, Primitives>();
  std::lock_guard<std::mutex> lock(mutex);
  auto key = Key(g);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  auto& e = Engine();
  memory::desc src(g.src, dt::f32, tag::ndhwc), dst(g.dst, dt::f32, tag::ndhwc), any_w(g.weights, dt::f32, tag::any);
  // Each call brings its own scratchpad: XLA may run two convolutions of one geometry at once.
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  Primitives p;
  p.fwd = dnnl::convolution_forward::primitive_desc(e, dnnl::prop_kind::forward_training,
      dnnl::algorithm::convolution_direct, src, any_w, dst, g.strides, g.pad_l, g.pad_r, attr);
  p.fwd_prim = dnnl::convolution_forward(p.fwd);
  p.bwd_data = dnnl::convolution_backward_data::primitive_desc(e, dnnl::algorithm::convolution_direct, src, any_w, dst,
      g.strides, g.pad_l, g.pad_r, p.fwd, attr);
  p.bwd_data_prim = dnnl::convolution_backward_data(p.bwd_data);
  p.bwd_weights = dnnl::convolution_backward_weights::primitive_desc(e, dnnl::algorithm::convolution_direct, src, any_w,
      dst, g.strides, g.pad_l, g.pad_r, p.fwd, attr);
  p.bwd_weights_prim = dnnl::convolution_backward_weights(p.bwd_weights);
  return cache->emplace(key, std::move(p)).first->second;
}

// The user's DHWIO kernel as a oneDNN memory of `want` (reordered when oneDNN prefers another layout).
memory KernelAs(const Geometry& g, void* data, const memory::desc& want, dnnl::stream& s) {
  memory user({g.weights, dt::f32, tag::dhwio}, Engine(), data);
  if (want == user.get_desc()) return user;
  memory out(want, Engine());
  dnnl::reorder(user, out).execute(s, user, out);
  return out;
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k, ffi::ResultBuffer<ffi::F32> y) {
  Geometry g;
  if (!GeometryOf(x.dimensions(), k.dimensions(), y->dimensions(), g)) {
    return ffi::Error::InvalidArgument(kShapeError);
  }
  return Guarded([&] {
    Primitives& p = PrimitivesOf(g);
    dnnl::stream s(Engine());
    memory src(p.fwd.src_desc(), Engine(), x.untyped_data());
    memory dst(p.fwd.dst_desc(), Engine(), y->untyped_data());
    memory w = KernelAs(g, k.untyped_data(), p.fwd.weights_desc(), s);
    memory scratch(p.fwd.scratchpad_desc(), Engine());
    p.fwd_prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

// dx = conv_transpose(dy, k): dy [n, d, h, w, co], k [kd, kh, kw, ci, co] -> dx [n, d, h, w, ci].
ffi::Error BackwardData(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> k, ffi::ResultBuffer<ffi::F32> dx) {
  Geometry g;
  if (!GeometryOf(dx->dimensions(), k.dimensions(), dy.dimensions(), g)) {
    return ffi::Error::InvalidArgument(kShapeError);
  }
  return Guarded([&] {
    Primitives& p = PrimitivesOf(g);
    dnnl::stream s(Engine());
    memory diff_dst(p.bwd_data.diff_dst_desc(), Engine(), dy.untyped_data());
    memory diff_src(p.bwd_data.diff_src_desc(), Engine(), dx->untyped_data());
    memory w = KernelAs(g, k.untyped_data(), p.bwd_data.weights_desc(), s);
    memory scratch(p.bwd_data.scratchpad_desc(), Engine());
    p.bwd_data_prim.execute(s, {{DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_DIFF_SRC, diff_src},
                                {DNNL_ARG_SCRATCHPAD, scratch}});
    s.wait();
  });
}

// dk = sum over positions of x (x) dy: x [n, d, h, w, ci], dy [n, d, h, w, co] -> dk [kd, kh, kw, ci, co].
ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dk) {
  Geometry g;
  if (!GeometryOf(x.dimensions(), dk->dimensions(), dy.dimensions(), g)) {
    return ffi::Error::InvalidArgument(kShapeError);
  }
  return Guarded([&] {
    Primitives& p = PrimitivesOf(g);
    dnnl::stream s(Engine());
    memory src(p.bwd_weights.src_desc(), Engine(), x.untyped_data());
    memory diff_dst(p.bwd_weights.diff_dst_desc(), Engine(), dy.untyped_data());
    memory user({g.weights, dt::f32, tag::dhwio}, Engine(), dk->untyped_data());
    bool direct = p.bwd_weights.diff_weights_desc() == user.get_desc();
    memory diff_w = direct ? user : memory(p.bwd_weights.diff_weights_desc(), Engine());
    memory scratch(p.bwd_weights.scratchpad_desc(), Engine());
    p.bwd_weights_prim.execute(s, {{DNNL_ARG_SRC, src}, {DNNL_ARG_DIFF_DST, diff_dst}, {DNNL_ARG_DIFF_WEIGHTS, diff_w},
                                   {DNNL_ARG_SCRATCHPAD, scratch}});
    if (!direct) dnnl::reorder(diff_w, user).execute(s, diff_w, user);
    s.wait();
  });
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SpinejaxConv3dForward, Forward,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SpinejaxConv3dBackwardData, BackwardData,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(SpinejaxConv3dBackwardWeights, BackwardWeights,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
