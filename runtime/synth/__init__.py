"""``python -m runtime.synth``: the synthetic world's command line (``__main__.py``).

The world itself is ``runtime.data.synth``.
"""
