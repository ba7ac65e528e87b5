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
            "48x32",
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
    assert [r["resolution"] for r in report["results"]] == ["32x32", "48x32"]
    for row in report["results"]:
        assert set(row) == {"resolution", "mean_score", "n"}
        assert row["n"] == 2 and 0.0 <= row["mean_score"] <= 1.0


def test_eval_table_and_bad_resolution(capsys):
    assert main(["testbed", "eval", "--resolution", "32x32", "--prompts", "1", "--steps", "1"]) == 0
    table = capsys.readouterr().out
    assert "| 32x32 (R) |" in table and "mean score" in table
    assert main(["testbed", "eval", "--resolution", "32by32"]) == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
    assert main(["testbed", "eval", "--resolution", "36x32"]) == 2
