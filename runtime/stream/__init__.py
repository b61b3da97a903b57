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

How a recording is read is one ``RecordingOptions`` (``runtime.data.options``), the same the
command lines build from their flags; what ``python -m runtime.stream`` does around the steps (files per
step, a DSEC submission, state files, the data-quality refusal, the report file) is ``StreamRun``
with ``RunOptions`` (``run.py``):

    from runtime.data.options import RecordingOptions
    from runtime.stream import RunOptions, Stream, StreamRun
    stream = Stream("model.onnx", "indoor_flying1_data.hdf5", options=RecordingOptions(gt_protocol="ddes"))
    run = StreamRun(stream, RunOptions(report="report.json").check())
    with stream:
        for step in run.steps():
            pass
        report = run.finish()
"""

from runtime.data.options import RecordingOptions

from .cli import main
from .core import Stream
from .opening import open_source
from .result import StepResult
from .run import RunOptions, StreamRun

__all__ = ["RecordingOptions", "RunOptions", "StepResult", "Stream", "StreamRun", "main", "open_source"]
