"""Property tests (issue 12): hostile model metadata.

``read_contract`` on the tiny model's inputs and outputs with any metadata is one ``RuntimeInputError``
line or a contract the runtime can stream (every number finite and in range, the input fitting the
encoding)."""

from __future__ import annotations

import json
import math

import onnxruntime as ort
from contract_models import metadata, stereo_model
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.contract import read_contract
from runtime.core.errors import RuntimeInputError
from runtime.core.names import MAX_SIDE, encoding_channels, encoding_problem

BINS, H, W, C = 5, 8, 12, 4
GOOD = metadata(bins=BINS, height=H, width=W, channels=C)
SESSION = ort.InferenceSession(stereo_model(height=H, width=W).SerializeToString(), providers=["CPUExecutionProvider"])
INPUTS, OUTPUTS = SESSION.get_inputs(), SESSION.get_outputs()

NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20),
                    st.sampled_from([0, 1, 5, 8, 12, 50.0, 0.001, 60_000.0, 1e-4, 65_536]))
JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), NUMBERS, st.text(max_size=6)),
                       lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                     max_size=3), max_leaves=6)


TARGETED = {  # values near and past each limit of snn.encoding
    "kind": st.sampled_from(["sbt", "count", "xyz", "", "SBT", "image"]),
    "window_ms": st.sampled_from([50.0, 0.001, 0.0009, 0.004, 60_000.0, 60_001.0, 1e300, -1.0, math.nan, math.inf]),
    "bins": st.sampled_from([5, 1, 0, -5, 1024, 1025, 10**9, 10**30, 2**63, 5.0, 5.5]),
    "height": st.sampled_from([H, 0, -H, 65_535, 65_536, 10**20, float(H), H + 0.5]),
    "width": st.sampled_from([W, 0, 65_536, 10**20, float(W)]),
}


@st.composite
def hostile_metadata(draw):
    meta = dict(GOOD)
    encoding = json.loads(meta["snn.encoding"])
    for key in draw(st.lists(st.sampled_from(sorted(encoding)), min_size=1, max_size=2)):
        encoding[key] = draw(st.one_of(TARGETED[key], TARGETED[key], NUMBERS, JSONISH))
    meta["snn.encoding"] = json.dumps(encoding)  # NaN and Infinity written as JSON's extensions
    for key in draw(st.lists(st.sampled_from(sorted(GOOD)), max_size=1)):
        choice = draw(st.integers(0, 2))
        if choice == 0:
            meta.pop(key, None)
        elif choice == 1:
            meta[key] = json.dumps(draw(JSONISH))
        else:
            meta[key] = draw(st.text(max_size=10))
    return meta


@settings(max_examples=150, deadline=None)
@given(meta=hostile_metadata())
def test_metadata_is_one_line_or_a_streamable_contract(meta):
    try:
        spec = read_contract("m.onnx", meta, INPUTS, OUTPUTS)
    except RuntimeInputError as exc:
        assert str(exc).startswith("m.onnx: ") and "\n" not in str(exc)
        return
    enc = spec.encoding
    assert encoding_problem(enc.kind, enc.window_ms, enc.bins) is None and enc.window_us >= enc.bins
    assert 1 <= enc.height <= MAX_SIDE and 1 <= enc.width <= MAX_SIDE
    assert encoding_channels(enc.kind, enc.bins) == BINS and (enc.height, enc.width) == (H, W)
    assert math.isfinite(spec.max_disparity) and spec.max_disparity > 0
    assert all(math.isfinite(v) for v in [*spec.dense_macs.values(), *(lay.fan_out for lay in spec.layers)])
