import json

from crdiff_search.cli import main
from crdiff_search.testbed import load_pipeline


def test_train_tiny_run_writes_a_loadable_pipeline(tmp_path, capsys):
    out = tmp_path / "pipe"
    code = main(
        [
            "testbed",
            "train",
            "--out",
            str(out),
            "--resolution",
            "16",
            "--steps",
            "3",
            "--batch-size",
            "4",
            "--save-every",
            "2",
            "--log-every",
            "1",
        ]
    )
    assert code == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["steps_done"] == 3 and info["final_loss"] > 0
    record = json.loads((out / "training.json").read_text())
    assert record["config"]["steps"] == 3 and record["config"]["seed"] == 0
    pipe = load_pipeline(folder=out)
    images = pipe(prompt=["a red circle"], height=16, width=24, num_inference_steps=1).images
    assert images[0].size == (24, 16)


def test_train_rejects_bad_settings_before_work(tmp_path, capsys):
    assert main(["testbed", "train", "--out", str(tmp_path), "--resolution", "20"]) == 2
    assert "multiple of 8" in capsys.readouterr().err


def test_eval_json_format(capsys):
    code = main(
        [
            "testbed",
            "eval",
            "--resolution",
            "32x32",
            "--resolution",
            "16x16",
            "--prompts",
            "2",
            "--steps",
            "2",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"training_resolution", "results"}
    assert report["training_resolution"] == "32x32"
    assert [r["resolution"] for r in report["results"]] == ["32x32", "16x16"]
    for row in report["results"]:
        assert set(row) == {"resolution", "mean_score", "n", "ground_truth_exact", "readable"}
        assert row["n"] == 2 and 0.0 <= row["mean_score"] <= 1.0
    # rendered scenes read back exactly at the training size, not at 16x16 (83 %)
    at_r, small = report["results"]
    assert at_r["ground_truth_exact"] == 1.0 and at_r["readable"] is True
    assert small["ground_truth_exact"] < 0.95 and small["readable"] is False


def test_the_map_sizes_are_sizes_where_the_objective_reads_ground_truth():
    from crdiff_search.testbed import TRAINING_RESOLUTION
    from crdiff_search.testbed.evaluate import GROUND_TRUTH_MIN, MAP_SIZES, ground_truth_exact

    w, h = TRAINING_RESOLUTION
    assert any(a * b < w * h for a, b in MAP_SIZES) and any(a * b > w * h for a, b in MAP_SIZES)
    assert TRAINING_RESOLUTION in MAP_SIZES and any(a != b for a, b in MAP_SIZES)
    for size in MAP_SIZES:
        assert ground_truth_exact(*size) >= GROUND_TRUTH_MIN, size


def test_eval_table_and_bad_resolution(capsys):
    assert main(["testbed", "eval", "--resolution", "32x32", "--prompts", "1", "--steps", "1"]) == 0
    table = capsys.readouterr().out
    assert "| 32x32 (R) |" in table and "mean score" in table
    assert "| 1.000 |" in table and "ground truth read" in table
    assert main(["testbed", "eval", "--resolution", "32by32"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["testbed", "eval", "--resolution", "36x32"]) == 2
