"""Small models whose normalization is configuration: a GPT and a CNN."""

from .cnn import CONV_NORMS, ConvNet, ConvNetConfig
from .gpt import GPT, NORMS, PLACEMENTS, QK_NORMS, GPTConfig, deepnorm_constants

__all__ = ["GPT", "GPTConfig", "NORMS", "PLACEMENTS", "QK_NORMS", "deepnorm_constants", "ConvNet", "ConvNetConfig",
           "CONV_NORMS"]
