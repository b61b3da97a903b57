"""Synthetic stereo event streams with exact ground-truth disparity (pure numpy, seeded).

``config.py`` the knobs, ``layout.py`` the scene types, ``surfaces.py`` the shapes, ``textures.py``
photographs and procedural textures, ``scene.py`` the world and its rendering (ray casting),
``esim.py`` the event camera, ``simulate.py`` both cameras over time (``Simulator``, ``generate``),
``pairpan.py`` a real stereo pair as an event recording, ``writer.py`` the MVSEC-layout files.
The command line is ``python -m runtime.synth`` (``runtime/synth/__main__.py``).
"""

from runtime.data.recording import SIDES

from .config import SynthConfig
from .simulate import Simulator, SynthChunk, SynthData, generate
from .writer import write_mvsec

__all__ = ["SIDES", "SynthChunk", "SynthConfig", "SynthData", "Simulator", "generate", "write_mvsec"]
