"""edgelab: reproducible testbeds for low-cost edge computing research.

The package is layered so that most of it is pure and testable anywhere:
``model``/``topology``/``profiles`` describe an experiment, ``plan``/``folding``
derive what to build, ``backends`` build it, ``results`` keeps what was measured.
"""

__version__ = "0.1.0"
