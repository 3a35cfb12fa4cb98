"""ROS-free inference core: pre/post-processing, model backends, the segmenter, metrics, overlays, sampling.

Imports only the standard library, NumPy and OpenCV at module level; ONNX Runtime and Keras are
imported lazily inside the backends.
"""
