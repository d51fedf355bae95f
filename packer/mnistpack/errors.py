"""The one exception family mnistpack raises for anything a user can get wrong.

Library code raises these; only `cli.py` turns them into one printed line and an
exit code. Each subclass also subclasses the builtin it refines, as msgpack does.
"""


class MnistpackError(Exception):
    """Base of every error a user can cause; its message is one full sentence."""


class DataError(MnistpackError, ValueError):
    """MNIST files missing, unreadable, truncated or malformed."""


class ModelError(MnistpackError, ValueError):
    """A model file that is missing, not Keras, or not a supported Dense stack."""


class QuantizationError(MnistpackError, ValueError):
    """Weights that cannot be quantized as asked (NaN, Inf, out of range)."""


class OptionError(MnistpackError, ValueError):
    """An option value mnistpack does not know (a precision, a compression)."""


class OutputError(MnistpackError, OSError):
    """An output folder or file that cannot be written."""


class FormatError(MnistpackError, ValueError):
    """A weights module or container that is not ours or is damaged.

    `stage` is one of constants.ERROR_STAGES, the same stage names the Luau
    decoder puts in its `mnistpack: <stage>:` messages.
    """

    stage = "container"

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.stage}: {message}")


class ModuleFormatError(FormatError):
    stage = "module"


class Base64Error(FormatError):
    stage = "base64"


class CompressionError(FormatError):
    stage = "zstd"


class ContainerError(FormatError):
    stage = "container"


class ChecksumError(FormatError):
    stage = "crc"


class MsgPackError(FormatError):
    stage = "msgpack"


class HeaderError(FormatError):
    stage = "header"


class ShapeError(FormatError):
    stage = "shape"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread as Python raises KeyboardInterrupt for Ctrl-C, so
    every `finally` runs (temporary files go) before `cli.py` reports it and exits 143.

    A BaseException, like KeyboardInterrupt: no `except Exception` may swallow it.
    """
