"""Desktop training (Keras 3): datasets, backbones, hierarchical heads, two-stage transfer learning.

Imports `edge`'s contracts (taxonomy, bundle manifest). The training pipeline itself is tracked
in issue 3.
"""
