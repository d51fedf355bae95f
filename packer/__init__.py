"""mnistpack: ship a Keras-trained MNIST network into Roblox as a compact, verified Luau module."""

__version__ = "0.1.0"
