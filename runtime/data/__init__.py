"""The event-data layer: recordings, windows and encodings (numpy, h5py; never torch, never ONNX Runtime).

``events.py`` event arrays, ``encoding.py`` the encodings, ``recording.py`` the recording base and
rectification, ``mvsec.py`` and ``dsec.py`` the readers, ``protocol.py`` the ground-truth protocols,
``sources.py`` ``open_recording`` and the window pipeline, ``synth/`` the synthetic world.
"""
