"""Small synthetic training runs that learn on two CPU cores in about a minute.

From scratch (weights none), MobileNetV2 at alpha 0.35 or the plain `small_cnn`: tests, benches and
the demo share one recipe instead of copies of the same YAML.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

_TEMPLATE = """\
run_dir: {run_dir}
seed: {seed}
data:
  kind: synthetic
  image_size: {image_size}
  batch_size: {batch_size}
  validation_fraction: {validation_fraction}
  test_fraction: {test_fraction}
  synthetic:
    species: [{species}]
    per_class: {per_class}
{augment}model:
  backbone: {backbone}
  weights: none
  alpha: 0.35
  heads: {heads}
  hidden_units: 64
  dropout: 0.2
training:
  stage1: {{epochs: 0}}
  stage2: {{epochs: {epochs}, learning_rate: {learning_rate}, unfreeze: all, lr_schedule: {lr_schedule}}}
  early_stopping_patience: {patience}
  progress: "{progress}"
  deterministic: {deterministic}
evaluation:
  gradcam_samples: {gradcam_samples}
"""


def synthetic_run_config(
    run_dir: Path,
    species: Sequence[str],
    *,
    image_size: int = 64,
    per_class: int = 80,
    epochs: int = 60,
    patience: int | None = None,
    gradcam_samples: int = 0,
    seed: int = 1,
    heads: str = "hierarchical",
    progress: str = "off",
    lr_schedule: str = "constant",
    test_fraction: float = 0.15,
    validation_fraction: float = 0.15,
    deterministic: bool = False,
    noise: float = 0.0,
    batch_size: int = 32,
    learning_rate: float = 0.001,
    colour_augment: bool = True,
    backbone: str = "mobilenet_v2",
) -> str:
    """Training YAML for a small run on synthetic crops of `species`.

    Stage 1 is skipped: with random backbone weights there are no features to keep frozen.
    `patience` defaults to `epochs` (no early stop), which small noisy validation sets need.
    `heads`: "hierarchical" (order, family, species) or "flat" (species only).
    `progress`: Keras' own output ("bar", "epoch" or "off"; the demo draws its own bar).
    `lr_schedule`: "constant" or "cosine" (decays to 5% over the epochs; the demo uses it).
    `test_fraction`: share of crops held out for the test split, which the int8 check runs on; a
    larger one makes the 1-point budget a measurement rather than one or two crops.
    `validation_fraction`: share held out for checkpoints and early stopping.
    `deterministic`: pinned threads and op determinism (train/reproducible.py; the demo uses it).
    `noise`: std of Gaussian pixel noise in training (0-255 scale): answers that survive a few grey
    levels of noise survive int8 rounding too (the demo uses it).
    `batch_size` / `learning_rate`: of the one training stage.
    `colour_augment`: random contrast and brightness (off in the demo: colour tells its species apart).
    `backbone`: "mobilenet_v2" (alpha 0.35, what users fine-tune) or "small_cnn" (learns these crops
    in a few epochs; the demo uses it).
    """
    return _TEMPLATE.format(
        run_dir=run_dir,
        seed=seed,
        image_size=image_size,
        species=", ".join(species),
        per_class=per_class,
        epochs=epochs,
        patience=epochs if patience is None else patience,
        gradcam_samples=gradcam_samples,
        heads=heads,
        progress=progress,
        lr_schedule=lr_schedule,
        test_fraction=test_fraction,
        validation_fraction=validation_fraction,
        deterministic="true" if deterministic else "false",
        augment=_augment(noise, colour_augment),
        batch_size=batch_size,
        learning_rate=f"{learning_rate:g}",
        backbone=backbone,
    )


def _augment(noise: float, colour: bool) -> str:
    """The augment section when it differs from the defaults, else nothing."""
    if noise <= 0 and colour:
        return ""
    parts = [] if colour else ["contrast: 0", "brightness: 0"]
    if noise > 0:
        parts.append(f"noise: {noise:g}")
    return "augment: {" + ", ".join(parts) + "}\n"
