// The C++ entry points of the kernels that other translation units call (the autograd wrappers).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

namespace normlab {

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                                        const c10::optional<at::Tensor>& bias,
                                                        const c10::optional<at::Tensor>& residual, int64_t groups,
                                                        int64_t seg, double eps, bool center);

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_bwd(const at::Tensor& dy, const at::Tensor& x,
                                                        const c10::optional<at::Tensor>& weight, const at::Tensor& stats,
                                                        const c10::optional<at::Tensor>& dsum, int64_t groups,
                                                        int64_t seg, double eps, bool center, bool need_weight,
                                                        bool need_bias, const c10::optional<at::Tensor>& bias);

// the same over x of any shape read as rows of `row` elements (row 0: x is (R, L)); outputs keep x's shape
std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_fwd_nd(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                                           const c10::optional<at::Tensor>& bias,
                                                           const c10::optional<at::Tensor>& residual, int64_t groups,
                                                           int64_t seg, double eps, bool center, int64_t row);

std::tuple<at::Tensor, at::Tensor, at::Tensor> rows_bwd_nd(const at::Tensor& dy, const at::Tensor& x,
                                                           const c10::optional<at::Tensor>& weight,
                                                           const at::Tensor& stats,
                                                           const c10::optional<at::Tensor>& dsum, int64_t groups,
                                                           int64_t seg, double eps, bool center, bool need_weight,
                                                           bool need_bias, const c10::optional<at::Tensor>& bias,
                                                           int64_t row);

std::tuple<at::Tensor, at::Tensor> batch_fwd(const at::Tensor& x, const c10::optional<at::Tensor>& weight,
                                             const c10::optional<at::Tensor>& bias,
                                             const c10::optional<at::Tensor>& mask,
                                             const c10::optional<at::Tensor>& mean,
                                             const c10::optional<at::Tensor>& var, double eps, bool cols);

std::tuple<at::Tensor, at::Tensor, at::Tensor> batch_bwd(const at::Tensor& dy, const at::Tensor& x,
                                                         const c10::optional<at::Tensor>& weight,
                                                         const c10::optional<at::Tensor>& mask,
                                                         const at::Tensor& stats, double eps, bool cols,
                                                         bool need_weight, bool need_bias,
                                                         const c10::optional<at::Tensor>& bias);

at::Tensor batch_update(at::Tensor& running_mean, at::Tensor& running_var, const at::Tensor& num_batches_tracked,
                        const at::Tensor& stats, double momentum, int64_t min_count);

}  // namespace normlab
