"""The build pipeline: Keras model -> pruned, quantized container -> compressed -> Luau module files."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from mnistpack import __version__, assets
from mnistpack.calibrate import Calibration
from mnistpack.compression import compress, decompress
from mnistpack.constants import (
    CALIBRATION_SURE_THRESHOLD,
    CALIBRATION_TEMPERATURE,
    COMPRESSIONS,
    MAX_DECODED_VALUES,
    META_CALIBRATION,
    PRECISIONS,
)
from mnistpack.container import Container, LayerSpec, pack, unpack
from mnistpack.data import PixelCounts, bundled_pixel_counts, load_test_set
from mnistpack.errors import ContainerError, ModelError, OptionError
from mnistpack.keras_model import load_network
from mnistpack.luau_emit import MODULE_NAME, emit_module
from mnistpack.model import (
    Conv2DLayer,
    DenseLayer,
    FlattenLayer,
    GlobalAvgPool2DLayer,
    Layer,
    Network,
    Pool2DLayer,
    frozen_float32,
    import_keras,
)
from mnistpack.outputs import write_files
from mnistpack.pruning import DEFAULT_PRUNE_THRESHOLD, dead_inputs, prune_inputs
from mnistpack.quantize import dequantize, quantize
from mnistpack.roblox import roblox_files
from mnistpack.train import sidecar_path

BIAS_PRECISION: Final = "float32"  # biases are tiny; FORMAT.md section 4 keeps them exact
# int8 scales: one per output channel for convolution kernels, whose channels differ in
# range once batch normalization is folded in; one per tensor for dense weights, which
# compresses better at the same accuracy (docs/quantization.md).
INT8_PER_ROW: Final = {"conv2d": True, "dense": False}
# Tensor names start with the layer kind's short name and count per kind: conv1, dense1, ...
TENSOR_PREFIX: Final = {"conv2d": "conv", "dense": "dense"}
TEXT_EXPORT_VALUES_PER_LINE: Final = 100
ACCURACY_SKIPPED: Final = "accuracy: skipped, no MNIST test data (use --data)"


@dataclass(frozen=True)
class BuildReport:
    precision: str
    payload_bytes: int  # tensor bytes inside the container
    module_bytes: int  # every generated script together
    text_export_bytes: int  # the same model as float32 Luau number literals (`text_export`)
    ratio: float  # text_export_bytes / module_bytes: how many times smaller the module is
    accuracy: float | None  # quantized weights on the MNIST test set; None without test data
    files: tuple[Path, ...]
    seconds: float  # from loading the model to the written files, without importing Keras
    container_bytes: int = 0
    compressed_bytes: int = 0
    source_accuracy: float | None = None  # the float32 model as loaded, for comparison
    inputs_zeroed: int = 0
    import_seconds: float = 0.0  # importing Keras, once per process


def shipped_model() -> Path:
    """The model mnistpack ships, which `build` packs when given no `--model`."""
    path = assets.shipped_model()
    if not path.is_file():
        raise ModelError(
            f"no --model given and the model mnistpack ships is not at {path}; "
            "reinstall mnistpack or pass --model PATH."
        )
    return path


def build(
    *,
    model: Path | None,
    precision: str,
    out_dir: Path,
    compression: str,
    data_dir: Path | None,
    progress: Callable[[str], None] | None = None,
) -> BuildReport:
    """Build the weights module for `model` (None: the shipped one) into `out_dir`.

    Nothing is written unless every step succeeds.
    """
    say = progress or (lambda _line: None)
    if precision not in PRECISIONS:
        raise OptionError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}.")
    if compression not in COMPRESSIONS:
        raise OptionError(f"unknown compression {compression!r}: choose one of {', '.join(COMPRESSIONS)}.")
    model = model if model is not None else shipped_model()
    say(f"loading {model}")
    # Importing Keras takes seconds and happens once per process: timed apart
    import_started = time.perf_counter()
    import_keras()
    started = time.perf_counter()
    stack = load_network(model)
    values = _weight_count(stack)
    say(f"network {_describe(stack)}, {values:,} weights and biases")
    if values > MAX_DECODED_VALUES:
        raise ModelError(
            f"{model} holds {values:,} weights and biases; a weights module holds at most "
            f"{MAX_DECODED_VALUES:,} (FORMAT.md section 6), so that Roblox decodes it in bounded "
            "time and memory."
        )
    counts = bundled_pixel_counts()
    calibration = read_calibration(model)
    container = quantize_network(
        stack,
        precision,
        prune_threshold=DEFAULT_PRUNE_THRESHOLD,
        pixel_counts=counts,
        calibration=calibration,
    )
    if calibration is not None:
        say(
            f"calibration from {sidecar_path(model)}: temperature {calibration.temperature:.3f}, "
            f"sure from {calibration.sure_threshold:.3f}"
        )
    zeroed = container.meta.get("pruning", {}).get("inputs_zeroed", 0)
    if "pruning" in container.meta:
        say(f"pruned {zeroed} input pixels lit in < {DEFAULT_PRUNE_THRESHOLD:.1%} of training images")
    say(f"quantized to {precision}")
    test_set = load_test_set(data_dir)
    accuracy = source_accuracy = None
    if test_set is not None:
        say(f"measuring accuracy on {len(test_set[1]):,} test digits")
        container, accuracy, source_accuracy = _with_accuracy(container, stack, *test_set)
    raw = pack(container)
    blob = compress(raw, compression)
    _verify(blob, compression, container)
    say(f"container {len(raw):,} bytes, {compression} {len(blob):,} bytes")
    files = emit_module(
        blob,
        compression,
        version=container.version(),
        comment_lines=_comment_lines(stack, container, len(raw), len(blob)),
    )
    # the drop-in Roblox files go in the same set as the weights files: all replaced, or none
    roblox = roblox_files(files)
    written = write_files(out_dir, {**files, **roblox}, obsolete=lambda: _obsolete_outputs(out_dir, files))
    for path in written:
        say(f"wrote {path}")
    module_bytes = sum(len(text.encode()) for text in files.values())
    text_bytes = len(text_export(stack).encode())
    return BuildReport(
        precision=precision,
        payload_bytes=sum(len(t.data) for t in container.tensors),
        module_bytes=module_bytes,
        text_export_bytes=text_bytes,
        ratio=text_bytes / module_bytes,
        accuracy=accuracy,
        files=written[: len(files)],
        seconds=time.perf_counter() - started,
        import_seconds=started - import_started,
        container_bytes=len(raw),
        compressed_bytes=len(blob),
        source_accuracy=source_accuracy,
        inputs_zeroed=zeroed,
    )


def read_calibration(model: Path) -> Calibration | None:
    """The calibration `mnistpack train` wrote into the model's note (`<model>.json`), if any."""
    note = sidecar_path(model)
    if not note.is_file():
        return None
    try:
        entry = json.loads(note.read_text(encoding="utf-8")).get(META_CALIBRATION)
        if entry is None:
            return None
        return Calibration(
            temperature=float(entry[CALIBRATION_TEMPERATURE]),
            sure_threshold=float(entry[CALIBRATION_SURE_THRESHOLD]),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelError(f"{note} holds no usable calibration ({exc}); retrain, or delete the file.") from exc


def quantize_network(
    stack: Network,
    precision: str,
    *,
    prune_threshold: float,
    pixel_counts: PixelCounts,
    calibration: Calibration | None = None,
) -> Container:
    """The container for `stack`: weights at `precision`, biases float32, the calibration (if
    any) in meta, and when the first layer is dense, its inputs that training images
    (almost) never light pruned."""
    dead = dead_inputs(pixel_counts, prune_threshold)
    prune = isinstance(stack.layers[0], DenseLayer)
    tensors = []
    layers = []
    counts = dict.fromkeys(TENSOR_PREFIX, 0)
    for index, layer in enumerate(stack.layers):
        if not isinstance(layer, DenseLayer | Conv2DLayer):
            layers.append(_window_spec(layer))
            continue
        counts[layer.kind] += 1
        name = f"{TENSOR_PREFIX[layer.kind]}{counts[layer.kind]}"
        weight = prune_inputs(layer.weight, dead) if prune and index == 0 else layer.weight
        per_row = INT8_PER_ROW[layer.kind]
        tensors += [
            quantize(f"{name}.weight", weight, precision, per_row=per_row),
            quantize(f"{name}.bias", layer.bias, BIAS_PRECISION),
        ]
        if isinstance(layer, DenseLayer):
            layers.append(LayerSpec("dense", layer.activation, f"{name}.weight", f"{name}.bias"))
        else:
            layers.append(
                LayerSpec(
                    "conv2d",
                    layer.activation,
                    f"{name}.weight",
                    f"{name}.bias",
                    strides=layer.strides,
                    padding=layer.padding,
                )
            )
    meta: dict[str, Any] = {
        "input": {"shape": list(stack.input_shape), "layout": "row-major", "range": [0.0, 1.0]},
        "labels": [str(label) for label in range(stack.output_size)],
        "precision": precision,
        "source_sha256": stack.source_sha256,
        "packer_version": __version__,
    }
    if prune:
        meta["pruning"] = {"threshold": float(prune_threshold), "inputs_zeroed": int(dead.sum())}
    if calibration is not None:
        meta[META_CALIBRATION] = calibration.as_meta()
    return Container(tuple(tensors), tuple(layers), meta)


def _window_spec(layer: Layer) -> LayerSpec:
    if isinstance(layer, Pool2DLayer):
        return LayerSpec(layer.kind, pool_size=layer.pool_size, strides=layer.strides, padding=layer.padding)
    return LayerSpec(layer.kind)


def dequantize_network(container: Container) -> Network:
    """The network exactly as every decoder rebuilds it from `container`."""
    tensors = {tensor.name: tensor for tensor in container.tensors}

    def values(name: str) -> np.ndarray:
        return frozen_float32(dequantize(tensors[name]))

    layers: list[Layer] = []
    for number, spec in enumerate(container.layers, start=1):
        name = f"{spec.kind}_{number}"
        if spec.kind == "dense":
            layers.append(DenseLayer(values(spec.weight), values(spec.bias), spec.activation, name))
        elif spec.kind == "conv2d":
            assert spec.strides is not None  # validate_header checked the layer map
            layers.append(
                Conv2DLayer(
                    values(spec.weight), values(spec.bias), spec.strides, spec.padding, spec.activation, name
                )
            )
        elif spec.kind == "global_avgpool2d":
            layers.append(GlobalAvgPool2DLayer(name))
        elif spec.kind == "flatten":
            layers.append(FlattenLayer(name))
        else:
            assert spec.pool_size is not None and spec.strides is not None
            layers.append(Pool2DLayer(spec.kind, spec.pool_size, spec.strides, spec.padding, name))
    return Network(
        layers=tuple(layers),
        source_sha256=str(container.meta.get("source_sha256", "")),
        input_shape=tuple(container.meta["input"]["shape"]),
        temperature=float(container.meta.get(META_CALIBRATION, {}).get(CALIBRATION_TEMPERATURE, 1.0)),
    )


def count_correct(stack: Network, images: np.ndarray, labels: np.ndarray) -> int:
    """How many test digits the NumPy forward pass of `stack` classifies right."""
    return int((stack.predict(images).argmax(axis=1) == labels).sum())


def _with_accuracy(
    container: Container, stack: Network, images: np.ndarray, labels: np.ndarray
) -> tuple[Container, float, float]:
    """`container` with its test score in meta, its accuracy, and the source model's accuracy."""
    correct = count_correct(dequantize_network(container), images, labels)
    score = {"correct": correct, "total": len(labels)}
    scored = replace(container, meta={**container.meta, "accuracy": score})
    return scored, correct / len(labels), count_correct(stack, images, labels) / len(labels)


def _verify(blob: bytes, compression: str, container: Container) -> None:
    """Decode what is about to be written: it must give back exactly the quantized tensors."""
    decoded = unpack(decompress(blob, compression))
    if decoded.tensors != container.tensors or decoded.layers != container.layers:
        raise ContainerError("the packed weights do not decode to the quantized weights; this is a bug.")


def _describe(stack: Network) -> str:
    """784-256-10 (relu, softmax) for a dense stack; each layer and its output for other networks."""
    dense = [layer for layer in stack.layers if isinstance(layer, DenseLayer)]
    if len(dense) == len(stack.layers):
        sizes = [stack.input_size, *(layer.weight.shape[0] for layer in dense)]
        activations = ", ".join(layer.activation for layer in dense)
        return f"{'-'.join(map(str, sizes))} ({activations})"
    steps = ["x".join(map(str, stack.input_shape))]
    for layer, shape in zip(stack.layers, stack.shapes(), strict=True):
        steps.append(f"{_layer_name(layer)} {'x'.join(map(str, shape))}")
    return " > ".join(steps)


def _layer_name(layer: Layer) -> str:
    if isinstance(layer, Conv2DLayer):
        _, kh, kw, _ = layer.kernel.shape
        stride = "" if layer.strides == (1, 1) else f"/{layer.strides[0]}"
        return f"conv{kh}x{kw}{stride} {layer.activation}"
    if isinstance(layer, Pool2DLayer):
        return f"{layer.kind[:3]}pool{layer.pool_size[0]}x{layer.pool_size[1]}"
    if isinstance(layer, DenseLayer):
        return f"dense {layer.activation}"
    return layer.kind


def _weight_count(stack: Network) -> int:
    return sum(layer.weight.size + layer.bias.size for layer in stack.weighted)


def _comment_lines(stack: Network, container: Container, raw_bytes: int, blob_bytes: int) -> list[str]:
    meta = container.meta
    score = meta.get("accuracy")
    accuracy = (
        f"{score['correct'] / score['total']:.2%} on {score['total']:,} MNIST test digits"
        if score
        else "not measured"
    )
    return [
        f"{MODULE_NAME}: {meta['precision']} weights of a {_describe(stack)} network, "
        f"format {container.version()}, read by mnistpack's Decoder.",
        f"container {raw_bytes:,} bytes, compressed {blob_bytes:,} bytes; test accuracy {accuracy}.",
        f"model sha256 {meta['source_sha256']}",
        f"generated by mnistpack {__version__}; do not edit",
    ]


def _obsolete_outputs(out_dir: Path, files: dict[str, str]) -> list[str]:
    """Weights files of an earlier build's other layout (single file vs split folder)."""
    folder = out_dir / MODULE_NAME
    parts = sorted(p.name for p in folder.glob("*.luau")) if folder.is_dir() else []
    candidates = [f"{MODULE_NAME}.luau", *(f"{MODULE_NAME}/{name}" for name in parts if _is_ours(name))]
    return [name for name in candidates if name not in files and (out_dir / name).is_file()]


def _is_ours(name: str) -> bool:
    return name == "init.luau" or (name.startswith("Part") and name[4:-5].isdigit())


def text_export(stack: Network) -> str:
    """The reference project's export: one `return {...}` module per tensor, rows as nested
    tables, every value "%.4f", 100 values per line. Only measured, never shipped."""
    modules = []
    for layer in stack.weighted:
        rows = ",\n".join(_text_vector(row) for row in layer.weight.reshape(len(layer.weight), -1))
        modules.append("return {\n" + rows + "\n}\n")
        modules.append("return " + _text_vector(layer.bias) + "\n")
    return "".join(modules)


def _text_vector(values: np.ndarray) -> str:
    numbers = [f"{value:.4f}" for value in values.tolist()]
    step = TEXT_EXPORT_VALUES_PER_LINE
    return "{" + ",\n".join(",".join(numbers[i : i + step]) for i in range(0, len(numbers), step)) + "}"


def summary(report: BuildReport) -> list[str]:
    """The table `mnistpack build` prints at the end."""
    scripts = len([path for path in report.files if path.suffix == ".luau"])
    if report.accuracy is None:
        accuracy = ACCURACY_SKIPPED
    else:
        source = f"; float32 model {report.source_accuracy:.2%}" if report.source_accuracy is not None else ""
        accuracy = f"accuracy: {report.accuracy:.2%} on the MNIST test set{source}"
    return [
        f"precision: {report.precision}",
        f"payload bytes: {report.payload_bytes:,}",
        f"module bytes: {report.module_bytes:,} in {scripts} script{'s' if scripts != 1 else ''}",
        f"ratio: {report.ratio:.1f}x smaller than the float32 text export "
        f"({report.text_export_bytes:,} bytes)",
        accuracy,
        f"time: {report.seconds:.1f} s (importing Keras: {report.import_seconds:.1f} s more)",
    ]
