"""The package's shape: old avatars keep loading, and no module imports itself back through another."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import yaml
from trainers import tiny_trainer

PACKAGE = Path(__file__).resolve().parents[1] / "latentavatar_ns"
KEYS = Path(__file__).parent / "data" / "checkpoint_keys.json"
"""Parameter and buffer names (with shapes) of latentavatar-tiny's checkpoints, per sampler and optional module."""


@pytest.mark.parametrize("variant", sorted(json.loads(KEYS.read_text())))
def test_checkpoint_names_are_those_saved_avatars_hold(synthetic_dataset: Path, tmp_path: Path, variant: str):
    viewed = {"view_dependent": True}  # avatars saved before latentavatar-tiny's features left the view direction out
    before = {**viewed, "expression_planes": 0}  # and before its default had bases
    options = {"uniform": before, "proposal": {**before, "sampler": "proposal"},
               "occupancy": {**before, "sampler": "occupancy"},
               "pose_refinement+code_to_field": {**before, "pose_refinement": True, "code_to_field": True},
               "expression_planes": {**viewed, "expression_planes": 8, "expression_plane_resolution": 0},
               "default": viewed, "no_view_dir": {}}[variant]  # today's auto setting, one camera: off
    state = tiny_trainer(synthetic_dataset, tmp_path, **options).pipeline.state_dict()
    per_frame = ("_model.frame_codes", "_model.pose_refinement.correction")  # one row per frame or image

    def shapes(named):
        return {k: list(s)[1:] if k in per_frame else list(s) for k, s in named.items()}

    assert shapes({k: v.shape for k, v in state.items()}) == shapes(json.loads(KEYS.read_text())[variant])


def _imports(path: Path) -> set:
    """The package modules a file imports at module level (lazy imports inside functions do not form cycles)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found.update(n for n in names if n.startswith("latentavatar_ns") and n != module)
    return found


def test_the_package_has_no_import_cycle():
    modules = {".".join(p.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in PACKAGE.rglob("*.py")}
    graph = {m: {n for n in _imports(p) if n in modules} for m, p in modules.items()}
    # A package's __init__ re-exporting its own modules is not a cycle of layers: skip parent -> child edges.
    graph = {m: {n for n in deps if not n.startswith(m + ".")} for m, deps in graph.items()}
    state: dict = {}

    def visit(m: str, path: list) -> None:
        state[m] = "open"
        for n in graph[m]:
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(n):] + [n]) if n in path
                                     else f"import cycle through {n}")
            if n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_config_files_of_earlier_layouts_still_load():
    """config.yml names its classes by module path; avatars saved before the wiring moved keep loading."""
    from latentavatar_ns.method.pipeline import LatentAvatarPipelineConfig
    from latentavatar_ns.method.trainer import LatentAvatarTrainerConfig

    text = ("trainer: !!python/name:latentavatar_ns.trainer.LatentAvatarTrainerConfig ''\n"
            "pipeline: !!python/name:latentavatar_ns.pipeline.LatentAvatarPipelineConfig ''\n")
    loaded = yaml.load(text, Loader=yaml.Loader)
    assert loaded["trainer"] is LatentAvatarTrainerConfig and loaded["pipeline"] is LatentAvatarPipelineConfig
