"""One module per claim of ``claims.md``: ``cNN_<slug>.py`` holds the claim's ``grid``, ``run``, ``verdict``,
``plot`` and paper text, and its :class:`~normlab.experiments.spec.Experiment` as ``SPEC``.

The registry finds them by walking this package; nothing lists them by hand.
"""
