"""mnistpack: ship a Keras-trained MNIST network into Roblox as a compact, verified Luau module."""

from importlib import metadata

try:
    __version__ = metadata.version("mnistpack")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"
