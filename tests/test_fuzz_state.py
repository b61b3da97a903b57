"""Property tests (issue 12): hostile state files. A ``--load-state`` file of any content (arrays of any
names, dtypes, shapes and values; cut short; bytes flipped; a single ``.npy``) is one line or a state the
model takes unchanged."""

from __future__ import annotations

import io

import numpy as np
import onnxruntime as ort
import pytest
from contract_models import metadata, stereo_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.contract import read_contract
from runtime.core.errors import RuntimeInputError
from runtime.statefile import check_state, load_state

BINS, H, W, C = 5, 8, 12, 4
SESSION = ort.InferenceSession(stereo_model(height=H, width=W).SerializeToString(), providers=["CPUExecutionProvider"])
SPEC = read_contract("m.onnx", metadata(bins=BINS, height=H, width=W, channels=C), SESSION.get_inputs(),
                     SESSION.get_outputs())
SHAPE = (1, C, H, W)


@st.composite
def state_files(draw):
    """The bytes of a state file: an .npz of hostile arrays (names, dtypes, shapes, values), maybe cut short
    or with bytes flipped, or a single .npy array."""
    arrays = {}
    for name in draw(st.lists(st.sampled_from(["mem0", "mem1", "mem2", "x"]), max_size=3, unique=True)) + (
            ["mem0", "mem1"] if draw(st.booleans()) else []):
        dtype = draw(st.sampled_from(["f4", "f8", "f2", "i8", "u1", "?", "U2", "c8"]))
        shape = draw(st.sampled_from([SHAPE, (C, H, W), (1, C, H, W + 1), (), (0,)]))
        values = np.random.default_rng(draw(st.integers(0, 99))).normal(size=shape)
        if draw(st.booleans()) and values.size:
            values.flat[0] = draw(st.sampled_from([np.nan, np.inf, 1e39]))
        with np.errstate(all="ignore"):
            arrays[name] = values.astype(dtype)
    buf = io.BytesIO()
    if draw(st.integers(0, 5)) == 0:
        np.save(buf, arrays.get("mem0", np.zeros(SHAPE, np.float32)))
    else:
        np.savez(buf, **arrays)
    data = bytearray(buf.getvalue())
    cut = draw(st.integers(0, 4))
    if cut == 1:
        data = data[: draw(st.integers(0, len(data)))]
    elif cut == 2 and data:
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 0xFF
    return bytes(data), arrays


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(file=state_files())
def test_state_file_is_one_line_or_the_state_unchanged(tmp_path, file):
    data, arrays = file
    path = tmp_path / "s.npz"
    path.write_bytes(data)
    where = f"--load-state {path}"
    try:
        with np.errstate(all="raise"):
            state = check_state(SPEC, load_state(str(path)), where)
    except RuntimeInputError as exc:
        assert str(exc).startswith(where + ": ") and "\n" not in str(exc)
        return
    assert set(state) == {"mem0", "mem1"}
    for name, value in state.items():
        assert value.dtype == np.float32 and value.shape == SHAPE and np.isfinite(value).all()
        np.testing.assert_array_equal(value, arrays[name].astype(np.float32))


def test_a_good_state_file_loads(tmp_path):
    good = {"mem0": np.ones(SHAPE, np.float32), "mem1": np.zeros(SHAPE, np.float32)}
    np.savez(tmp_path / "s.npz", **good)
    state = check_state(SPEC, load_state(str(tmp_path / "s.npz")))
    assert all(np.array_equal(state[k], good[k]) for k in good)
    with pytest.raises(RuntimeInputError, match="holds 1 non-finite"):
        check_state(SPEC, {**good, "mem1": np.where(np.arange(C * H * W).reshape(SHAPE) == 3, np.nan, 0.0)})
