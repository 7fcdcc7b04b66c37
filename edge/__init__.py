"""trapcam's on-device runtime.

This package runs on the trap (Raspberry Pi, Jetson). It must never import TensorFlow or
Keras: `train` and `convert` import `edge`'s contracts (config, model bundle, database
schema), never the other way round.
"""

__version__ = "0.1.0"
