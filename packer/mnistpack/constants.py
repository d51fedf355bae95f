"""Every magic, version, limit and code of FORMAT.md, under the names FORMAT.md uses.

`luau/Constants.luau` mirrors this module; tests check the two agree.
"""

from typing import Final

FORMAT_NAME: Final = "mnistpack"
MAGIC: Final = b"MNPK"
FORMAT_VERSION: Final = 2
# the oldest version decoders still read (version 1: dense layers only)
MIN_FORMAT_VERSION: Final = 1

# magic (4) + format_version (2) + header_length (4)
PREFIX_SIZE: Final = 10
CRC_SIZE: Final = 4

MAX_HEADER_BYTES: Final = 1 << 20
MAX_CONTAINER_BYTES: Final = 64 << 20
MAX_TENSOR_ELEMENTS: Final = 1 << 24
MAX_TENSORS: Final = 256
MAX_LAYERS: Final = 64
MAX_DIM: Final = 65536
MAX_NAME_BYTES: Final = 64
MAX_TENSOR_RANK: Final = 4
MAX_ACTIVATION_VALUES: Final = 1 << 20
MAX_MULTIPLY_ADDS: Final = 1 << 26
# Resource limits (FORMAT.md section 6), the same for every format version.
MAX_DECODED_VALUES: Final = 1 << 22
MAX_HEADER_VALUES: Final = 1 << 18
MAX_HEADER_DEPTH: Final = 32
MAX_HEADER_INTEGER: Final = (1 << 53) - 1

PRECISIONS: Final = ("float32", "float16", "int8", "int4")
ACTIVATIONS: Final = ("linear", "relu", "sigmoid", "tanh", "softmax")
LAYER_KINDS: Final = ("dense", "conv2d", "maxpool2d", "avgpool2d", "global_avgpool2d", "flatten")
PADDINGS: Final = ("valid", "same")
COMPRESSIONS: Final = ("zstd", "none")

INT4_BLOCK_SIZE: Final = 32
# bytes per int4 block: 16 bytes of nibbles (the float16 scale is stored apart)
INT4_BLOCK_BYTES: Final = INT4_BLOCK_SIZE // 2
INT4_SCALE_BYTES: Final = 2
INT4_ZERO_CODE: Final = 8
# low float32 mantissa bits that must be zero in an int8 scale (FORMAT.md section 4)
INT8_SCALE_ZERO_BITS: Final = 8
INT8_MAX: Final = 127

MAX_SOURCE_CHARS: Final = 199_999
BASE64_LINE_CHARS: Final = 960

# meta.calibration (FORMAT.md section 3.5), optional: the final softmax's temperature and the
# top probability below which an answer is shown as "not sure"
META_CALIBRATION: Final = "calibration"
CALIBRATION_TEMPERATURE: Final = "temperature"
CALIBRATION_SURE_THRESHOLD: Final = "sure_threshold"

ERROR_STAGES: Final = ("module", "base64", "zstd", "container", "crc", "msgpack", "header", "shape")
