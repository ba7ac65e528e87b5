"""benchmarks/gpu.py in its CPU form: every section's logic runs before any GPU is seen."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.py"


def _errors(node, path=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _errors(value, f"{path}/{key}")
            if key == "error":
                yield f"{path}: {value}"


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_tiny_models(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--config", "tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)
    assert printed == json.loads(out.read_text())
    assert list(_errors(printed)) == []
    assert {"env", "scorers", "sd15", "sdxl", "tune"} <= printed.keys()
    for kind in ("imagereward", "clip", "pickscore", "aesthetic"):
        assert printed["scorers"][kind]["finite"] and printed["scorers"][kind]["images_per_s"] > 0
    for model in ("sd15", "sdxl"):
        layouts = printed[model]["pruner"]["layouts"]
        assert set(layouts) == {
            "device/sorted",
            "device/none",
            "device/histogram",
            "host/histogram",
        }
        assert all(row["masks_equal_kthvalue"] for row in layouts.values())
        trial = printed[model]["trial"]["trial"]
        assert trial["scorer"] == "imagereward"
        assert 0 <= trial["not_generation_or_scoring_share"] < 1
        assert trial["switch_s"] > 0 and trial["generate_s"] > 0
        assert all(r["images_per_s"] > 0 for r in printed[model]["trial"]["throughput"].values())
    assert printed["sd15"]["pruner"]["masks_equal_kthvalue_bfloat16"]
    poa = printed["sd15"]["poa"]
    assert set(poa["modes"]) == {"dense", "batched", "two_pass"}
    assert poa["batched_vs_two_pass_max_abs"] == 0.0  # fp32 on CPU: the same arithmetic
    tune = printed["tune"]
    assert tune["exit"] == 0 and tune["trials"] == 4 and tune["states"] == {"COMPLETE": 4}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sections", "env,warp"], "--sections: unknown ['warp']"),
        (["--model-parts", "pruner,vae"], "--model-parts: unknown ['vae']"),
        (["--device", "mps"], "valid are cuda, cuda:N and cpu"),
    ],
)
def test_gpu_check_refuses_bad_arguments(args, message):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--config", "tiny", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert message in proc.stderr
