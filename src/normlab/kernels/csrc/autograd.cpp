// The rows kernels with their autograd in C++ (normlab::rows_ad), for the eager CPU path: a
// LayerNorm/RMSNorm call then costs no Python in its backward, which matters for the small
// tensors of a real model (a (768, 128) LayerNorm takes ~25 us; a Python backward adds ~10 us).
// Under torch.compile the layers use the Python autograd.Function of ops.py over rows_fwd/rows_bwd,
// which the compiler traces; both are tested against the reference.
//
// A backward asked to build a graph (create_graph=True: second derivatives, gradient penalties)
// recomputes the gradient by autograd through the reference formula written with ATen ops, so the
// result is differentiable; the fused backward kernel is used otherwise.
#include <ATen/ATen.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "entry.h"

namespace normlab {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// the rows normalization by ATen ops (differentiable): the reference's corrected two-pass formula
at::Tensor rows_reference(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& res,
                          int64_t groups, int64_t seg, double eps, bool center) {
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor src = (res.defined() ? x + res : x).to(acc);
  const int64_t R = src.size(0), L = src.size(1), K = L / seg;
  at::Tensor y;
  if (center) {
    const at::Tensor shift = src.mean({1}, true);
    const at::Tensor d = src - shift;
    const at::Tensor corr = d.mean({1}, true);
    const at::Tensor var = (d.square().mean({1}, true) - corr.square()).clamp_min(0);
    y = (d - corr) * at::rsqrt(var + eps);
  } else {
    y = src * at::rsqrt(src.square().mean({1}, true) + eps);
  }
  auto per_element = [&](const at::Tensor& p) {
    return p.to(acc).reshape({groups, K, 1}).expand({groups, K, seg}).reshape({1, groups, L});
  };
  if (w.defined() || b.defined()) {
    at::Tensor yg = y.view({R / groups, groups, L});
    if (w.defined()) yg = yg * per_element(w);
    if (b.defined()) yg = yg + per_element(b);
    y = yg.view({R, L});
  }
  return y.to(x.scalar_type());
}

struct RowsFunction : public torch::autograd::Function<RowsFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& residual,
                               int64_t groups, int64_t seg, double eps, bool center) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, stats, s] = rows_fwd(x, weight, bias, residual, groups, seg, eps, center);
    const bool fused = residual.has_value() && residual->defined();
    const at::Tensor w = weight.has_value() ? *weight : at::Tensor();
    const at::Tensor b = bias.has_value() ? *bias : at::Tensor();
    const at::Tensor r = fused ? *residual : at::Tensor();
    ctx->save_for_backward({fused ? s : x, w, b, stats, x, r});
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["seg"] = seg;
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["center"] = center;
    ctx->saved_data["fused"] = fused;
    ctx->mark_non_differentiable({stats});
    ctx->set_materialize_grads(false);
    return {y, stats, s};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &src = saved[0], &w = saved[1], &b = saved[2], &stats = saved[3], &x = saved[4],
                     &r = saved[5];
    const int64_t groups = ctx->saved_data["groups"].toInt(), seg = ctx->saved_data["seg"].toInt();
    const double eps = ctx->saved_data["eps"].toDouble();
    const bool center = ctx->saved_data["center"].toBool(), fused = ctx->saved_data["fused"].toBool();
    const at::Tensor& dy = grads[0];
    const at::Tensor dsum = fused ? grads[2] : at::Tensor();
    const at::Tensor none;
    if (!dy.defined()) return {dsum, none, none, dsum, none, none, none, none};  // only the sum was used
    at::Tensor dx, dw, db;
    if (at::GradMode::is_enabled()) {  // create_graph=True: a differentiable gradient, via the reference
      std::vector<at::Tensor> inputs;
      std::vector<int> which;
      const at::Tensor* cand[4] = {&x, &w, &b, &r};
      for (int i = 0; i < 4; ++i) {
        if (cand[i]->defined() && cand[i]->requires_grad()) {
          inputs.push_back(*cand[i]);
          which.push_back(i);
        }
      }
      at::Tensor out[4];
      if (!inputs.empty()) {
        const at::Tensor y = rows_reference(x, w, b, r, groups, seg, eps, center);
        const auto got = torch::autograd::grad({y}, inputs, {dy}, /*retain_graph=*/true, /*create_graph=*/true,
                                               /*allow_unused=*/true);
        for (size_t k = 0; k < which.size(); ++k) out[which[k]] = got[k];
      }
      if (dsum.defined()) {
        out[0] = out[0].defined() ? out[0] + dsum : dsum;
        out[3] = out[3].defined() ? out[3] + dsum : dsum;
      }
      return {out[0], out[1], out[2], fused ? out[3] : none, none, none, none, none};
    }
    const bool need_w = w.defined() && ctx->needs_input_grad(1), need_b = b.defined() && ctx->needs_input_grad(2);
    std::tie(dx, dw, db) = rows_bwd(dy, src, w.defined() ? c10::optional<at::Tensor>(w) : c10::nullopt, stats,
                                    dsum.defined() ? c10::optional<at::Tensor>(dsum) : c10::nullopt, groups, seg,
                                    eps, center, need_w, need_b,
                                    b.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt);
    return {dx, need_w ? dw : none, need_b ? db : none, fused ? dx : none, none, none, none, none};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_ad(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                                       const c10::optional<at::Tensor>& bias,
                                                       const c10::optional<at::Tensor>& residual, int64_t groups,
                                                       int64_t seg, double eps, bool center) {
  auto out = RowsFunction::apply(x, weight, bias, residual, groups, seg, eps, center);
  return {out[0], out[1], out[2]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(normlab, m) {
  m.def("rows_ad(Tensor x, Tensor? weight, Tensor? bias, Tensor? residual, int groups, int seg, float eps, "
        "bool center) -> (Tensor, Tensor, Tensor)");
}

// CPU tensors only (the caller checks): the autograd node is recorded here, the kernels run below it
TORCH_LIBRARY_IMPL(normlab, CompositeImplicitAutograd, m) { m.impl("rows_ad", &rows_ad); }

}  // namespace normlab
