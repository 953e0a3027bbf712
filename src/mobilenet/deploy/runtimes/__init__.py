"""Runtimes (predictors): one module per backend, each running files or models and returning logits.

Every runtime module exposes a ``Predictor`` subclass with ``from_file(path, precision, threads)``.
Runtimes may use format writers (to build a file from a model); they never import ``export``.
"""
