"""Custom Keras layers that inference needs to load a model (registered for safe-mode loading).

Keras is imported only when :func:`custom_layers` is first called (when a ``.keras`` model is
loaded or built), so importing this module stays light.
"""

from __future__ import annotations

from functools import cache


@cache
def custom_layers() -> dict[str, type]:
    """Define and register the package's Keras layers once; returns them by class name."""
    import keras
    from keras import layers, ops

    @keras.saving.register_keras_serializable(package="road_seg_perception")
    class ExposureNorm(layers.Layer):
        """``log(x + eps)`` standardised over each image (all pixels and channels together).

        A global gain ``k * x`` or exposure curve ``x ** g`` becomes a shift or a scale of ``log x``,
        which the standardisation removes: the network sees a day frame and the same frame darkened
        to dusk alike (up to ``eps``), while colour ratios between channels survive.
        """

        def __init__(self, epsilon: float = 1.0 / 255.0, **kwargs):
            super().__init__(**kwargs)
            self.epsilon = float(epsilon)

        def call(self, x):
            y = ops.log(x + self.epsilon)
            mean = ops.mean(y, axis=(1, 2, 3), keepdims=True)
            var = ops.mean(ops.square(y - mean), axis=(1, 2, 3), keepdims=True)
            return (y - mean) / ops.sqrt(var + 1e-6)

        def get_config(self) -> dict:
            return {**super().get_config(), "epsilon": self.epsilon}

    return {"ExposureNorm": ExposureNorm}
