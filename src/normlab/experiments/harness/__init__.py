"""Code that several claims share: training the GPT (``lm``) and the 1-D ConvNet (``cnn``), the residual-stream
measurements of C23/C25 (``stream``), the landscape measurements of C01/C02 (``landscape``), the token batches
of C11/C12 (``sequences``) and the deterministic checks of C04-C08 (``exact``)."""
