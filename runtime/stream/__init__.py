"""Streaming event-camera stereo through a compiled SNN: the Python API (``core.py``: ``Stream``) and
``python -m runtime.stream`` (``cli.py``).

One step per encoding window; the state is carried from step to step (and across chunks: feeding the
same windows in several calls, or to a second ``Stream`` given the first one's state, gives the same
outputs as one run).

    from runtime.stream import Stream
    with Stream("model.onnx", max_steps=20) as stream:   # no events: the built-in synthetic stereo stream
        for step in stream:
            use(step.disparity)                            # float32 [H, W], pixels
        print(stream.report()["speed"]["fps_model"])
"""

from .cli import main
from .core import StepResult, Stream, open_source

__all__ = ["StepResult", "Stream", "main", "open_source"]
