"""Bake an operating threshold into a road model, so that 0.5 on its output means ``T`` on the original's.

Every tool and the node threshold the road probability at 0.5 unless told otherwise. A model whose
best threshold is another value ``T`` (``road-seg-threshold`` chooses it on training frames) can
carry it instead: shifting the bias of the 1-channel layer that produces the sigmoid's logit by
``-logit(T)`` gives ``sigmoid(z - logit(T)) >= 0.5  <=>  sigmoid(z) >= T`` at every output pixel.
The layers allowed between that bias and the sigmoid are upsampling ones: their interpolation
weights sum to 1, so a constant shift passes through them unchanged. The mask at the model's output
grid is then exactly the original's at ``T``; at a frame's full size it is too, up to the pixels
where the bilinear resize of the two probabilities falls on different sides of the threshold.
"""

from __future__ import annotations

import math

#: Layers that pass a constant added to every pixel through unchanged.
_SHIFT_INVARIANT = ("UpSampling2D",)


def logit(p: float) -> float:
    """``log(p / (1 - p))`` for ``p`` in (0, 1)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {p}")
    return math.log(p / (1.0 - p))


def _producer(tensor):
    """The layer that produced a Keras functional tensor."""
    return tensor._keras_history.operation  # noqa: SLF001  Keras 3's public-by-convention graph link


def _activation(layer) -> str:
    """The name of a layer's activation ('' for a layer without one)."""
    return getattr(getattr(layer, "activation", None), "__name__", "")


def logit_bias_layer(model):
    """The 1-channel convolution whose bias sets the logit of the model's sigmoid output.

    Either the output layer itself (a ``Conv2D`` with a sigmoid activation) or the layer behind a final
    sigmoid ``Activation``, through upsampling layers only. ValueError when the model is not of that form.
    """
    if len(model.outputs) != 1:
        raise ValueError(f"model {model.name} has {len(model.outputs)} outputs, expected 1")
    layer = _producer(model.outputs[0])
    if _activation(layer) != "sigmoid":
        raise ValueError(f"model {model.name} does not end in a sigmoid (its output layer is {layer.name})")
    wanted = "sigmoid"  # a convolution with the sigmoid built in ...
    if type(layer).__name__ == "Activation":  # ... or a separate sigmoid after the logit
        layer = _producer(layer.input)
        while type(layer).__name__ in _SHIFT_INVARIANT:
            layer = _producer(layer.input)
        wanted = "linear"
    if type(layer).__name__ != "Conv2D" or layer.filters != 1 or not layer.use_bias or _activation(layer) != wanted:
        raise ValueError(f"the logit of model {model.name} comes from {layer.name} ({type(layer).__name__}), "
                         "not from a 1-filter Conv2D with a bias (through upsampling layers only)")
    return layer


def bake_threshold(model, threshold: float) -> float:
    """Shift ``model``'s logit bias in place so that 0.5 on its output is ``threshold`` on its output before.

    Returns the shift added to the bias (``-logit(threshold)``).
    """
    shift = -logit(threshold)
    layer = logit_bias_layer(model)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + shift])
    return shift
