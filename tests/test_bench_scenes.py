"""The loop benchmark's nights are what their names promise (the figures describe them).

The crowded night is the tropical case of issue 16: a 4K sheet with about 60 insects in view at
once. Only the plan is made here (the simulation's ground truth, no frame is rendered); the
benchmark itself is `python -m bench.bench_loop --scene crowded`.
"""

from __future__ import annotations

import pytest

from bench.bench_loop import SCENES, plan_night


@pytest.mark.parametrize(("name", "low", "high"), [("default", 8, 14), ("crowded", 50, 75)])
def test_a_benchmark_night_keeps_its_crowd_in_view(name: str, low: float, high: float) -> None:
    scene = SCENES[name]
    night, plan = plan_night(scene.frames, None, seed=1, scene=scene)
    assert (night.params.width, night.params.height) == (scene.width, scene.height)
    assert low <= plan.mean_visible <= high, plan
    assert plan.min_visible >= 0.5 * scene.target_visible, plan
