"""Synthetic stereo event streams with exact ground-truth disparity (pure numpy, seeded).

``config.py`` the knobs, ``layout.py`` the scene types, ``surfaces.py`` the shapes, ``textures.py``
photographs and procedural textures, ``scene.py`` the world and its rendering (ray casting),
``esim.py`` the event camera, ``simulate.py`` both cameras over time (``Simulator``, ``generate``),
``pairpan.py`` a real stereo pair as an event recording, ``writer.py`` the MVSEC-layout files,
``__main__.py`` the command line (``python -m runtime.synth``).
"""

from runtime.recording import SIDES

from .config import SynthConfig
from .simulate import Simulator, SynthChunk, SynthData, generate
from .writer import write_mvsec

__all__ = ["SIDES", "SynthChunk", "SynthConfig", "SynthData", "Simulator", "generate", "write_mvsec", "main"]


def main(argv=None) -> int:
    """The command line (``python -m runtime.synth``)."""
    from .__main__ import main as _main

    return _main(argv)
