"""The names of the ONNX contract (schema 1), defined once: the compiler writes them
(``compiler.export``), the runtime reads them (``runtime.contract``), benchmarks and tests use them.

A leaf module (standard library only), so that the compiler may import it without pulling in the runtime.
"""

from typing import NamedTuple

SCHEMA = "1"
STATE_IN = "state_in."
STATE_OUT = "state_out."
SPIKES = "spikes."



class Task(NamedTuple):
    """What a task's graph takes and gives: the one place the runtime decides anything by task."""

    inputs: tuple[str, ...]  # the data inputs, in order
    output: str  # the data output
    events: bool  # the inputs are event windows of snn.encoding, one per camera: what streams feed
    disparity: bool  # the output is a disparity map [batch, H, W] (pixels, snn.max_disparity), scored on disparity


TASKS: dict[str, Task] = {
    "stereo": Task(("left", "right"), "disparity", events=True, disparity=True),
    "classification": Task(("image",), "logits", events=False, disparity=False),
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
    return list(TASKS[task].inputs)


def data_output(task: str) -> str:
    """The data output of a task's graph."""
    return TASKS[task].output


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


# Bounds of ``snn.encoding`` (and of a genotype's input), checked by the parser and by the runtime before
# the first step (docs/reliability.md): a window is 1 us to a minute long and holds at least one
# microsecond per bin; events address pixels with uint16 coordinates.
EVENT_ENCODINGS = ("sbt", "count")
WINDOW_MS_MIN = 0.001
WINDOW_MS_MAX = 60_000.0
MAX_BINS = 1024
MAX_SIDE = 65_535


def encoding_problem(kind: object, window_ms: float, bins: int) -> str | None:
    """What is wrong with an event encoding's kind, window and bins (None when nothing is)."""
    if kind not in EVENT_ENCODINGS:
        return f"unknown encoding kind {kind!r} (this runtime reads {', '.join(EVENT_ENCODINGS)})"
    if not WINDOW_MS_MIN <= window_ms <= WINDOW_MS_MAX:
        return f"window_ms {window_ms!r} is outside {WINDOW_MS_MIN:g}..{WINDOW_MS_MAX:g} ms"
    if not 1 <= bins <= MAX_BINS:
        return f"bins {bins!r} is outside 1..{MAX_BINS}"
    if round(window_ms * 1000) < bins:
        return f"a window of {window_ms:g} ms cannot hold {bins} bins of at least 1 us each"
    return None
