// The rows and batch kernels with their autograd in C++ (normlab::rows_ad, normlab::batch_ad), for
// the eager CPU path: a LayerNorm/RMSNorm/BatchNorm call then costs no Python in its backward, which
// matters for the small tensors of a real model (a (768, 128) LayerNorm takes ~25 us; a Python
// backward adds ~10 us).  Under torch.compile the layers use the Python autograd.Function of ops.py
// over rows_fwd/rows_bwd and batch_fwd/batch_bwd,
// which the compiler traces; both are tested against the reference.
//
// A backward asked to build a graph (create_graph=True: second derivatives, gradient penalties)
// recomputes the gradient by autograd through the reference formula written with ATen ops, so the
// result is differentiable; the fused backward kernel is used otherwise.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <vector>

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

// grads of `y` (by autograd through `reference`) for the candidates that require grad, in place of
// the fused backward when a graph is asked for (create_graph=True)
template <size_t N, typename F>
std::array<at::Tensor, N> differentiable_grads(const std::array<const at::Tensor*, N>& cand, const at::Tensor& dy,
                                               F reference) {
  std::vector<at::Tensor> inputs;
  std::vector<size_t> which;
  for (size_t i = 0; i < N; ++i) {
    if (cand[i]->defined() && cand[i]->requires_grad()) {
      inputs.push_back(*cand[i]);
      which.push_back(i);
    }
  }
  std::array<at::Tensor, N> out;
  if (inputs.empty()) return out;
  const at::Tensor y = reference();
  const auto got = torch::autograd::grad({y}, inputs, {dy}, /*retain_graph=*/true, /*create_graph=*/true,
                                         /*allow_unused=*/true);
  for (size_t k = 0; k < which.size(); ++k) out[which[k]] = got[k];
  return out;
}

// whether autograd would record this call (grad mode on and some input requiring grad); when not,
// the kernels run without an autograd node (no saved tensors, no copies of given statistics)
inline bool wants_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool wants_grad(const c10::optional<at::Tensor>& t) { return t.has_value() && wants_grad(*t); }

template <typename... Ts>
inline bool records_grad(const Ts&... ts) {
  return at::GradMode::is_enabled() && (wants_grad(ts) || ...);
}

// needs_input_grad counts the tensor inputs that were passed (an absent optional has no edge), so a
// bias's index depends on whether a weight was given: each Function records its parameters' edges
inline void save_param_edges(AutogradContext* ctx, const c10::optional<at::Tensor>& weight,
                             const c10::optional<at::Tensor>& bias) {
  int64_t edge = 1;  // x is edge 0
  ctx->saved_data["weight_edge"] = weight.has_value() ? edge++ : int64_t(-1);
  ctx->saved_data["bias_edge"] = bias.has_value() ? edge++ : int64_t(-1);
}

inline bool param_needs_grad(AutogradContext* ctx, const char* which) {
  const int64_t edge = ctx->saved_data[which].toInt();
  return edge >= 0 && ctx->needs_input_grad(size_t(edge));
}

inline c10::optional<at::Tensor> opt(const at::Tensor& t) {
  return t.defined() ? c10::optional<at::Tensor>(t) : c10::nullopt;
}

// A gradient without storage of its own (a batched one: autograd.grad(is_grads_batched=True),
// jacobian/hessian(vectorize=True) run the backward under vmap) cannot be read by the kernels
// directly: such a backward calls the backward op through the dispatcher, whose batching fallback
// runs the kernel once per batch entry.
inline bool plain(const at::Tensor& t) { return !t.defined() || t.has_storage(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_bwd_dispatched(
    const at::Tensor& dy, const at::Tensor& src, const at::Tensor& w, const at::Tensor& stats, const at::Tensor& dsum,
    int64_t groups, int64_t seg, double eps, bool center, bool need_w, bool need_b, const at::Tensor& b, int64_t row) {
  static auto op = c10::Dispatcher::singleton().findSchemaOrThrow("normlab::rows_bwd", "").typed<decltype(rows_bwd)>();
  auto rows = [&](const at::Tensor& t) { return row == 0 || !t.defined() ? t : t.reshape({-1, row}); };
  auto [dx, dw, db] = op.call(rows(dy), rows(src), opt(w), stats, opt(rows(dsum)), groups, seg, eps, center, need_w,
                              need_b, opt(b));
  return {row == 0 ? dx : dx.reshape(src.sizes()), dw, db};
}

struct RowsFunction : public torch::autograd::Function<RowsFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& residual,
                               int64_t groups, int64_t seg, double eps, bool center, int64_t row) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, stats, s] = rows_fwd_nd(x, weight, bias, residual, groups, seg, eps, center, row);
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
    ctx->saved_data["row"] = row;
    save_param_edges(ctx, weight, bias);
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
    const int64_t row = ctx->saved_data["row"].toInt();
    const at::Tensor& dy = grads[0];
    const at::Tensor dsum = fused ? grads[2] : at::Tensor();
    const at::Tensor none;
    if (!dy.defined()) return {dsum, none, none, dsum, none, none, none, none, none};  // only the sum was used
    at::Tensor dx, dw, db;
    if (at::GradMode::is_enabled()) {  // create_graph=True: a differentiable gradient, via the reference
      auto out = differentiable_grads<4>({&x, &w, &b, &r}, dy, [&] {
        if (row == 0) return rows_reference(x, w, b, r, groups, seg, eps, center);
        const at::Tensor r2 = r.defined() ? r.reshape({-1, row}) : r;  // rows of an n-d x: the reference's (R, L)
        return rows_reference(x.reshape({-1, row}), w, b, r2, groups, seg, eps, center).view(x.sizes());
      });
      if (dsum.defined()) {
        out[0] = out[0].defined() ? out[0] + dsum : dsum;
        out[3] = out[3].defined() ? out[3] + dsum : dsum;
      }
      return {out[0], out[1], out[2], fused ? out[3] : none, none, none, none, none, none};
    }
    const bool need_w = w.defined() && param_needs_grad(ctx, "weight_edge");
    const bool need_b = b.defined() && param_needs_grad(ctx, "bias_edge");
    if (plain(dy) && plain(dsum))
      std::tie(dx, dw, db) = rows_bwd_nd(dy, src, opt(w), stats, opt(dsum), groups, seg, eps, center, need_w, need_b,
                                         opt(b), row);
    else
      std::tie(dx, dw, db) = rows_bwd_dispatched(dy, src, w, stats, dsum, groups, seg, eps, center, need_w, need_b, b,
                                                 row);
    return {dx, need_w ? dw : none, need_b ? db : none, fused ? dx : none, none, none, none, none, none};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_ad(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                                       const c10::optional<at::Tensor>& bias,
                                                       const c10::optional<at::Tensor>& residual, int64_t groups,
                                                       int64_t seg, double eps, bool center, int64_t row) {
  if (!records_grad(x, weight, bias, residual))
    return rows_fwd_nd(x, weight, bias, residual, groups, seg, eps, center, row);
  auto out = RowsFunction::apply(x, weight, bias, residual, groups, seg, eps, center, row);
  return {out[0], out[1], out[2]};
}

// BatchNorm by ATen ops (differentiable), as the batch kernels compute it: (N, C, S) or, cols, (M, C);
// `used` holds the (4, C) batch statistics or the (2, C) given mean and variance (constants)
at::Tensor batch_reference(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& used,
                           double eps, bool cols) {
  if (x.dim() != (cols ? 2 : 3)) {  // an n-d call of the eager path: the same as its (M, C) / (N, C, S) view
    const at::Tensor xv = cols ? x.reshape({-1, x.size(-1)}) : x.reshape({x.size(0), x.size(1), -1});
    return batch_reference(xv, w, b, used, eps, cols).view(x.sizes());
  }
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor src = x.to(acc);
  const int64_t C = x.size(1);
  const std::vector<int64_t> view = cols ? std::vector<int64_t>{1, C} : std::vector<int64_t>{1, C, 1};
  const std::vector<int64_t> dims = cols ? std::vector<int64_t>{0} : std::vector<int64_t>{0, 2};
  at::Tensor y;
  if (used.size(0) == 2) {
    y = (src - used[0].to(acc).view(view)) * at::rsqrt(used[1].to(acc).view(view) + eps);
  } else {
    const at::Tensor shift = src.mean(dims, true);
    const at::Tensor d = src - shift;
    const at::Tensor corr = d.mean(dims, true);
    const at::Tensor var = (d.square().mean(dims, true) - corr.square()).clamp_min(0);
    y = (d - corr) * at::rsqrt(var + eps);
  }
  if (w.defined()) y = y * w.to(acc).view(view);
  if (b.defined()) y = y + b.to(acc).view(view);
  return y.to(x.scalar_type());
}

// BatchNorm (no mask) with its autograd in C++, for the eager CPU path (no Python around the kernels).
// In training with running statistics the same call folds the batch statistics into them (as
// torch's native_batch_norm does): no further op between the layer's forward and the next layer.
struct BatchFunction : public torch::autograd::Function<BatchFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                               const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& mean,
                               const c10::optional<at::Tensor>& var, double eps, bool cols) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, stats] = batch_fwd(x, weight, bias, c10::nullopt, mean, var, eps, cols);
    const bool given = mean.has_value() && mean->defined();
    const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    // given statistics are copied: the running buffers may move before the backward
    const at::Tensor used = given ? at::stack({*mean, *var}).to(acc) : stats;
    ctx->save_for_backward({x, weight.value_or(at::Tensor()), bias.value_or(at::Tensor()), used});
    ctx->saved_data["eps"] = eps;
    ctx->saved_data["cols"] = cols;
    save_param_edges(ctx, weight, bias);
    ctx->mark_non_differentiable({stats});
    ctx->set_materialize_grads(false);
    return {y, stats};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &w = saved[1], &b = saved[2], &used = saved[3];
    const double eps = ctx->saved_data["eps"].toDouble();
    const bool cols = ctx->saved_data["cols"].toBool();
    const at::Tensor& dy = grads[0];
    const at::Tensor none;
    if (!dy.defined()) return {none, none, none, none, none, none, none};
    if (at::GradMode::is_enabled()) {  // create_graph=True: a differentiable gradient, via the reference
      const auto out = differentiable_grads<3>({&x, &w, &b}, dy,
                                               [&] { return batch_reference(x, w, b, used, eps, cols); });
      return {out[0], out[1], out[2], none, none, none, none};
    }
    const bool need_w = w.defined() && param_needs_grad(ctx, "weight_edge");
    const bool need_b = b.defined() && param_needs_grad(ctx, "bias_edge");
    at::Tensor dx, dw, db;
    if (plain(dy)) {
      std::tie(dx, dw, db) = batch_bwd(dy, x, opt(w), c10::nullopt, used, eps, cols, need_w, need_b, opt(b));
    } else {  // batched (see plain())
      static auto op =
          c10::Dispatcher::singleton().findSchemaOrThrow("normlab::batch_bwd", "").typed<decltype(batch_bwd)>();
      std::tie(dx, dw, db) = op.call(dy, x, opt(w), c10::nullopt, used, eps, cols, need_w, need_b, opt(b));
    }
    return {ctx->needs_input_grad(0) ? dx : none, need_w ? dw : none, need_b ? db : none, none, none, none, none};
  }
};

// (y, stats, bad): with running_mean/var given in training (mean/var absent), the running statistics
// are updated in place (num_batches_tracked first, when count_batch) and `bad` lists the channels
// whose batch statistics were non-finite; `bad` is empty when there are none (nothing for the
// caller to read), and always without an update
std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_ad(
    const at::Tensor& x, const c10::optional<at::Tensor>& weight, const c10::optional<at::Tensor>& bias,
    const c10::optional<at::Tensor>& mean, const c10::optional<at::Tensor>& var, double eps, bool cols,
    const c10::optional<at::Tensor>& running_mean, const c10::optional<at::Tensor>& running_var,
    const c10::optional<at::Tensor>& num_batches_tracked, double momentum, int64_t min_count, bool count_batch) {
  variable_list out;
  if (records_grad(x, weight, bias)) {
    out = BatchFunction::apply(x, weight, bias, mean, var, eps, cols);
  } else {  // nothing to differentiate (eval under no_grad, inference): the kernel alone
    auto [y, stats] = batch_fwd(x, weight, bias, c10::nullopt, mean, var, eps, cols);
    out = {y, stats};
  }
  at::Tensor bad = at::empty({0}, x.options().dtype(at::kBool));
  const bool update = running_mean.has_value() && running_mean->defined() && !(mean.has_value() && mean->defined());
  if (update) {
    at::NoGradGuard no_grad;
    if (count_batch) num_batches_tracked->add_(1);
    at::Tensor rm = *running_mean, rv = *running_var;
    const at::Tensor flags = batch_update(rm, rv, *num_batches_tracked, out[1], momentum, min_count);
    // written through their data: bump their versions, as an in-place op would (a graph that saved
    // them then refuses to use the new values, as with the reference's copy_)
    torch::autograd::impl::bump_version(rm);
    torch::autograd::impl::bump_version(rv);
    const bool* fp = flags.data_ptr<bool>();
    if (std::any_of(fp, fp + flags.numel(), [](bool v) { return v; })) bad = flags;
  }
  return {out[0], out[1], bad};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(normlab, m) {
  m.def("batch_ad(Tensor x, Tensor? weight, Tensor? bias, Tensor? mean, Tensor? var, float eps, bool cols, "
        "Tensor(a!)? running_mean=None, Tensor(b!)? running_var=None, Tensor(c!)? num_batches_tracked=None, "
        "float momentum=0.1, int min_count=2, bool count_batch=True) -> (Tensor, Tensor, Tensor)");
  m.def("rows_ad(Tensor x, Tensor? weight, Tensor? bias, Tensor? residual, int groups, int seg, float eps, "
        "bool center, int row=0) -> (Tensor, Tensor, Tensor)");
}

// CPU tensors only (the caller checks): the autograd node is recorded here, the kernels run below it
TORCH_LIBRARY_IMPL(normlab, CompositeImplicitAutograd, m) {
  m.impl("rows_ad", &rows_ad);
  m.impl("batch_ad", &batch_ad);
}

}  // namespace normlab
