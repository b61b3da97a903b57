"""The runtime's ONNX Runtime settings (runtime.session.session_options): chosen from measurements
(docs/runtime.md), applied to every session the runtime opens."""

from __future__ import annotations

import onnxruntime as ort
from contract_models import stereo_model

from runtime.session import SNNSession, session_options


def test_defaults_are_the_measured_choice():
    opts = session_options()
    assert opts.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # >= extended fuses int8
    assert opts.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 0  # ONNX Runtime's default: one thread per physical core
    assert session_options(threads=3).intra_op_num_threads == 3


def test_sessions_of_the_runtime_use_them(tmp_path):
    stereo_model(tmp_path / "m.onnx")
    used = SNNSession(tmp_path / "m.onnx", device="cpu", threads=1).session.get_session_options()
    assert used.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert used.intra_op_num_threads == 1 and used.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
