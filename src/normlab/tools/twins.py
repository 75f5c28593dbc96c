r"""The layers :func:`normlab.convert` puts in place of other libraries' norms where normlab's own presets
round differently: an :class:`RMSNorm` that keeps the casting order of the module it replaced."""

from __future__ import annotations

import torch
from torch import Tensor

from ..layers.layernorm import LayerNorm, LayerNorm2d
from ..layers.rmsnorm import RMSNorm

__all__ = ["CastRMSNorm", "CastLayerNorm", "ChannelsFirstLayerNorm", "CASTS"]

_HALF = (torch.float16, torch.bfloat16)

#: where the replaced module rounds: "output" once at the end (normlab's own order: Gemma, Cohere, OLMo-2);
#: "input" the normalized values to the input dtype before the weight multiplies them (Llama:
#: ``weight * x_hat.to(input_dtype)``); "weight" to the weight's dtype when that is fp16/bf16 (T5)
CASTS = ("output", "input", "weight")


class CastRMSNorm(RMSNorm):
    r""":class:`~normlab.RMSNorm` that rounds where the module it replaced rounds.

    ``cast="input"`` (Llama and its ~140 copies in transformers) computes
    ``weight * (x / rms(x)).to(x.dtype)``: the normalized values are
    rounded to the input dtype, then multiplied by the weight in the
    weight's and input's promoted dtype (a float32 weight on a bf16 input
    gives a float32 output, as in the original).  ``cast="weight"`` (T5)
    rounds them to the weight's dtype when that is fp16/bf16 and otherwise
    multiplies in float32.  ``cast="output"`` rounds once, at the end
    (normlab's own order).  Where the cast is a no-op (float32 input and
    weight) the fused kernel computes the whole call; otherwise the
    normalization runs fused and the weight multiplies in a second op, in
    the original's order, so outputs match the original's to its rounding.

    A zero-centered gamma over a half-precision weight is formed as
    ``1 + weight.float()`` (Gemma's order) and passed to the fused kernel in
    float32; normlab's own layer would form it in the weight's dtype.

    A state dict without normlab's metadata (the original module's) holds
    ``weight`` as the original stored it: with ``zero_centered_gamma``
    (Gemma: ``1 + weight``) it is read as the offset, never shifted by 1.

    Example::

        >>> import torch
        >>> m = CastRMSNorm(8, eps=1e-6, cast="input").bfloat16()
        >>> x = torch.randn(2, 8, dtype=torch.bfloat16)
        >>> xf = x.float()
        >>> ref = m.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-6)).to(x.dtype)
        >>> torch.equal(m(x), ref)
        True
    """

    def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True, device=None,
                 dtype=None, *, zero_centered_gamma: bool = False, cast: str = "output") -> None:
        if cast not in CASTS:
            raise ValueError(f"CastRMSNorm: cast must be one of {CASTS}, got {cast!r}")
        if cast != "output" and zero_centered_gamma:
            raise ValueError("CastRMSNorm: a zero-centered gamma is supported with cast='output' only "
                             f"(Gemma's order), got cast={cast!r}")
        super().__init__(normalized_shape, eps, elementwise_affine, device, dtype,
                         zero_centered_gamma=zero_centered_gamma)
        self.cast = cast
        # the helpers exist before any call: building a module inside a torch.compile trace breaks the graph
        self._helper("_plain", False)
        if zero_centered_gamma:
            self._helper("_gamma32", True)

    def _helper(self, key: str, affine: bool) -> RMSNorm:
        """A normlab RMSNorm of this layer's shape and eps that is not a submodule (no state-dict entries)."""
        helper = self.__dict__.get(key)
        if helper is None or helper.normalized_shape != self.normalized_shape:
            helper = RMSNorm(self.normalized_shape, self.eps, elementwise_affine=affine)
            self.__dict__[key] = helper
        helper.eps = self.eps
        return helper

    def _normalized(self, x: Tensor) -> Tensor:
        """``x / rms(x)`` in x's dtype, by normlab's fused kernel."""
        return self._helper("_plain", False)(x)

    def _scaled_fp32_gamma(self, x: Tensor, w: Tensor) -> Tensor:
        """``x / rms(x) * (1 + w.float())`` rounded once: the fused kernel with gamma formed in float32 (as Gemma
        does), not in the half weight's dtype where ``1 + w`` would round."""
        helper = self._helper("_gamma32", True)
        helper._parameters["weight"] = 1 + w.float()  # differentiable: grads reach w
        y = helper(x)
        helper._parameters["weight"] = None  # (no try/finally: torch.compile breaks the graph at one)
        return y

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no mask: torch's signature
        w = self.weight
        if w is not None and self.zero_centered_gamma and w.dtype in _HALF and isinstance(x, Tensor):
            return self._scaled_fp32_gamma(x, w)
        if w is None or self.cast == "output" or not isinstance(x, Tensor):
            return super().forward(x)
        if self.cast == "input":
            if x.dtype not in _HALF and torch.promote_types(w.dtype, x.dtype) == x.dtype:
                return super().forward(x)  # the cast back to x's dtype is exact: one fused call
            return w * self._normalized(x)
        # "weight" (T5): x * rsqrt(...) is float32 (x's dtype if wider); rounded to the weight's dtype if half
        if w.dtype == x.dtype and x.dtype not in _HALF:
            return super().forward(x)
        if w.dtype in _HALF:
            y = self._normalized(x if x.dtype in (w.dtype, torch.float32) else x.float())
            return w * y.to(w.dtype)
        return w * self._normalized(x.float() if x.dtype in _HALF else x)

    def _convert_gamma(self, state_dict, prefix: str, local_metadata: dict) -> None:
        if local_metadata.get("zero_centered_gamma") is None:
            return  # the replaced module's own state dict: its convention is this layer's
        super()._convert_gamma(state_dict, prefix, local_metadata)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cast={self.cast!r}"


class CastLayerNorm(LayerNorm):
    r""":class:`~normlab.LayerNorm` over the last dim that rounds the normalized values to the input dtype
    before ``weight * x_hat + bias`` (``cast="input"``, DeBERTa's order), or once at the end (``"output"``).

    Example::

        >>> import torch
        >>> m = CastLayerNorm(8, eps=1e-7, cast="input").bfloat16()
        >>> x = torch.randn(2, 8, dtype=torch.bfloat16)
        >>> xf = x.float()
        >>> xhat = ((xf - xf.mean(-1, keepdim=True)) / torch.sqrt(xf.var(-1, unbiased=False, keepdim=True) + 1e-7))
        >>> torch.equal(m(x), m.weight * xhat.to(x.dtype) + m.bias)
        True
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True,
                 device=None, dtype=None, *, cast: str = "output") -> None:
        if cast not in ("output", "input"):
            raise ValueError(f"CastLayerNorm: cast must be 'output' or 'input', got {cast!r}")
        super().__init__(normalized_shape, eps, elementwise_affine, bias, device, dtype)
        self.cast = cast
        self.__dict__["_plain"] = LayerNorm(self.normalized_shape, eps, elementwise_affine=False)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no mask: torch's signature
        w, b = self.weight, self.bias
        if w is None or self.cast == "output" or not isinstance(x, Tensor):
            return super().forward(x)
        if x.dtype not in _HALF and torch.promote_types(w.dtype, x.dtype) == x.dtype:
            return super().forward(x)
        plain = self.__dict__["_plain"]
        plain.eps = self.eps
        y = w * plain(x)
        return y if b is None else y + b

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, cast={self.cast!r}"


class ChannelsFirstLayerNorm(LayerNorm2d):
    r""":class:`~normlab.LayerNorm2d` computed as ConvNeXt's and timm's channels-first LayerNorm computes it:
    the (N, C, H, W) input permuted to (N, H, W, C), normalized over its last dim, permuted back.

    Same values as :class:`~normlab.LayerNorm2d`, but the output has the strides of the original's
    (channels-last memory), and the convolution after it picks its algorithm by them: with
    :class:`~normlab.LayerNorm2d`'s contiguous NCHW output, a tiny ConvNeXt ran 18% slower on CPU.

    Example::

        >>> import torch
        >>> m = ChannelsFirstLayerNorm(8)
        >>> x = torch.randn(2, 8, 3, 3)
        >>> torch.allclose(m(x), torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(
        ...     0, 3, 1, 2), atol=1e-6), m(x).is_contiguous(memory_format=torch.channels_last)
        (True, True)
    """

    def __init__(self, num_channels: int, eps: float = 1e-6, affine: bool = True, device=None, dtype=None, *,
                 bias: bool = True) -> None:
        super().__init__(num_channels, eps, affine, device, dtype, bias=bias)
        self.__dict__["_rows"] = LayerNorm(self.num_channels, eps, affine, bias)

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]  # no mask: torch's signature
        if not isinstance(x, Tensor) or x.ndim != 4:
            return super().forward(x)
        rows = self.__dict__["_rows"]
        rows.eps = self.eps
        rows._parameters["weight"], rows._parameters["bias"] = self.weight, self.bias
        return rows(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
