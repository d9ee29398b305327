"""The models and their engines: the networks (MiDaS small, Depth Anything V2 Small), the registry of
models with each one's weights and input sizing, the weights' finding and checking, the engines that run a
network (PyTorch, and torch-free ONNX Runtime / OpenVINO with the export cache), the position embeddings,
the CPU quota.

Arrays in, arrays out. May import only ``app.config`` and ``app.errors`` of the app; only
``app.depth.torch_engines`` imports torch.
"""
