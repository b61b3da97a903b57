"""The runtime's core: standard-library-only leaves that every package may import.

``names.py`` the ONNX contract's names, ``atomic.py`` atomic file writing, ``errors.py`` the
command-line kit (one-line errors, exit codes, the argument parser).
"""
