"""Pipeline stages: each a small function with typed inputs and one typed result.

export -> optimise -> quantise (onnxruntime | openvino) -> verify -> benchmark -> judge
"""
