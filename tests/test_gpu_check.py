"""scripts/gpu_check.sh: its CPU mode runs every step of the GPU check and writes what each promises;
the kit is a consistent set; bad invocations end with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path
from typing import Dict

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
STEPS = ["cuda_tests", "data", "train", "bench_speed", "samplers", "nerfacc", "time_to_psnr"]


def run_check(*args: str, python: str = sys.executable, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHON": python})


@pytest.fixture(scope="module")
def cpu_check(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu_check")
    result = run_check("--cpu", "--out", str(out))
    assert (out / "summary.json").exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return out


@pytest.mark.slow
def test_every_step_ok(cpu_check: Path):
    summary = json.loads((cpu_check / "summary.json").read_text())
    statuses = {step["name"]: step["status"] for step in summary["steps"]}
    logs = {name: (cpu_check / "logs" / f"{name}.log").read_text()[-2000:] for name, s in statuses.items() if s != "ok"}
    assert statuses == {name: "ok" for name in STEPS}, logs
    assert summary["ok"] and summary["mode"] == "cpu"
    assert all(0 < step["seconds"] <= step["limit_s"] for step in summary["steps"])
    assert "all steps ok" in (cpu_check / "summary.txt").read_text()


@pytest.mark.slow
def test_cuda_tests_ran_cpu_against_cpu(cpu_check: Path):
    root = ET.parse(cpu_check / "cuda_tests.xml").getroot()
    suite = root if root.tag == "testsuite" else root[0]
    assert int(suite.get("tests")) >= 4
    assert int(suite.get("failures")) == 0 and int(suite.get("errors")) == 0
    ran = {case.get("name") for case in suite.iter("testcase") if case.find("skipped") is None}
    assert {"test_render_matches_cpu[uniform]", "test_render_matches_cpu[proposal]",
            "test_render_matches_cpu[occupancy]"} <= ran


@pytest.mark.slow
def test_train_output(cpu_check: Path):
    train = json.loads((cpu_check / "train.json").read_text())
    assert train["command"].startswith("ns-train latentavatar-tiny ")
    assert train["steps"] == 4 and train["resolution"] == [64, 64] and train["images_per_batch"] == 2
    assert 0 < train["step_s_median"] and train["steps_per_s"] == pytest.approx(1 / train["step_s_median"])
    assert train["peak_memory_gb"] > 0 and train["memory_kind"] == "process peak RSS"
    assert all(map(lambda x: x == x, (train["loss_first"], train["loss_last"])))  # not NaN


@pytest.mark.slow
def test_bench_speed_output(cpu_check: Path):
    speed = json.loads((cpu_check / "speed_cpu.json").read_text())
    paper = speed["results"]["paper"]
    for key in ("train_step_s", "render_fixed_expression_fps", "render_new_expression_fps", "peak_memory_mib",
                "matmul_tflops", "copy_gb_per_s"):
        assert paper[key] > 0, key
    for floor in ("fixed_expression_floor", "new_expression_floor"):
        assert paper[floor]["floor_s"] > 0 and paper[floor]["measured_over_floor"] > 0
    assert speed["config"]["resolution"] == "64" and speed["device"].startswith("cpu")


@pytest.mark.slow
def test_samplers_output(cpu_check: Path):
    samplers = json.loads((cpu_check / "samplers.json").read_text())
    assert samplers["method"] == "latentavatar-tiny"
    results = samplers["results"]
    assert set(results) == {"uniform", "proposal", "occupancy"}
    for r in results.values():
        assert r["train"]["s_per_step"] > 0 and r["render"]["s_per_frame"] > 0
        assert r["render"]["field_evals_per_ray"] > 0 and r["heldout_psnr"] > 0
    # Proposal evaluates the main field at num_nerf_samples points per ray, a quarter of uniform's here.
    assert results["proposal"]["vs_uniform"]["field_evals_ratio_render"] < 0.5


@pytest.mark.slow
def test_nerfacc_output(cpu_check: Path):
    nerfacc = json.loads((cpu_check / "nerfacc.json").read_text())
    assert nerfacc["problems"] == []
    assert 0.8 * nerfacc["ball_fraction"] <= nerfacc["occupied_fraction"] <= 1.6 * nerfacc["ball_fraction"]
    assert "CUDA only" in nerfacc["sampling"]


@pytest.mark.slow
def test_time_to_psnr_output(cpu_check: Path):
    ttp = json.loads((cpu_check / "time_to_psnr.json").read_text())
    assert set(ttp["runs"]) == {"paper", "default"} and ttp["size"] == "latentavatar-tiny"
    for run in ttp["runs"].values():
        assert len(run["curve"]) == 2 and run["steps_per_s"] > 0
        assert [p["step"] for p in run["curve"]] == sorted(p["step"] for p in run["curve"])
    assert set(ttp["comparison"]) >= {"step_rate_ratio", "paper_final_psnr", "default_seconds_to_paper_psnr",
                                      "time_ratio", "meets_target"}


def _kit_pins() -> Dict[str, str]:
    pins = {}
    for line in (REPO / "scripts" / "gpu_kit_requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, rest = line.partition("==")
            pins[canonicalize_name(name)] = rest.split("#")[0].strip()
    return pins


def test_kit_is_a_consistent_set_of_what_the_project_uses():
    """Every wheel of the kit is installed here (nerfstudio at the kit's version), and every pin meets what
    nerfstudio and the kit's other packages ask of it."""
    pins = _kit_pins()
    assert len(pins) >= 10 and version("nerfstudio") == pins["nerfstudio"]
    for name, pinned in pins.items():
        try:
            distribution(name)
        except PackageNotFoundError:
            pytest.fail(f"{name} is in the GPU kit but not installed here")
        for requirement in distribution(name).requires or []:
            req = Requirement(requirement)
            wanted = canonicalize_name(req.name)
            if wanted in pins and (req.marker is None or req.marker.evaluate({"extra": ""})):
                assert req.specifier.contains(pins[wanted], prereleases=True), f"{name} asks for {requirement}"


def test_help_and_one_line_errors(tmp_path: Path):
    result = run_check("--help")
    assert result.returncode == 0 and "--cpu" in result.stdout and "make gpu-kit" in result.stdout
    result = run_check("--frobnicate")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "--frobnicate" in result.stderr
    # A Python without nerfstudio and no wheels: the kit is missing.
    bare = tmp_path / "python"
    bare.write_text(f"#!/bin/sh\nexec {sys.executable} -S \"$@\"\n")
    bare.chmod(0o755)
    result = run_check("--out", str(tmp_path / "out"), "--wheels", str(tmp_path / "none"), python=str(bare))
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().count("\n") == 0 and "run make gpu-kit first" in result.stderr
