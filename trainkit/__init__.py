"""trainkit: a callback-instrumented training toolkit on Keras 3, MLflow, TensorBoard and Hydra."""

__version__ = "0.1.0"
