"""The names of the ONNX contract (schema 1), defined once: the compiler writes them
(``compiler.export``), the runtime reads them (``runtime.contract``), benchmarks and tests use them.

A leaf module with no imports, so that the compiler may import it without pulling in the runtime.
"""

SCHEMA = "1"
STATE_IN = "state_in."
STATE_OUT = "state_out."
SPIKES = "spikes."

# task -> (data inputs, data output)
TASKS: dict[str, tuple[tuple[str, ...], str]] = {
    "stereo": (("left", "right"), "disparity"),
    "classification": (("image",), "logits"),
}

# metadata_props keys
META_SCHEMA = "snn.schema"
META_TASK = "snn.task"
META_GENOTYPE = "snn.genotype"
META_ENCODING = "snn.encoding"
META_LAYERS = "snn.layers"
META_DENSE_MACS = "snn.dense_macs"
META_PARAMS = "snn.params"
META_MAX_DISPARITY = "snn.max_disparity"
META_PASSES = "snn.passes"  # JSON list: the compiler's optimisation passes applied, in order
META_QUANTIZATION = "snn.quantization"  # JSON object, int8 graphs only: what was quantised and how
REQUIRED_METADATA = (META_SCHEMA, META_TASK, META_GENOTYPE, META_ENCODING, META_LAYERS, META_DENSE_MACS)


def data_inputs(task: str) -> list[str]:
    """The data inputs of a task's graph, in order."""
    return list(TASKS[task][0])


def data_output(task: str) -> str:
    """The data output of a task's graph."""
    return TASKS[task][1]


def state_input(name: str) -> str:
    return STATE_IN + name


def state_output(name: str) -> str:
    return STATE_OUT + name


def spikes_output(layer: str) -> str:
    return SPIKES + layer


def encoding_channels(kind: str, bins: int) -> int:
    """Channels of one encoded event frame (``snn.encoding``): ``bins`` for SBT, ``2 * bins`` for event
    counts (ON and OFF per bin). The one place this rule is written."""
    if kind == "sbt":
        return bins
    if kind == "count":
        return 2 * bins
    raise ValueError(f"unknown encoding {kind!r}; choose one of sbt, count")
