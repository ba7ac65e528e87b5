"""The repair map from study folders (no Ray): rows, ceiling, gap closed, files, CLI errors."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from PIL import Image

from crdiff_search.analysis.repair_map import BASE_COLUMNS, build_map, format_markdown, write_map
from crdiff_search.cli import main
from crdiff_search.config import load_experiment
from crdiff_search.errors import UsageError

# resolution -> (dense, best pruned, best POA, winner w, interval, verdict)
STUDIES = {
    "48x48": (0.08, 0.09, 0.10, 1.5, (-0.01, 0.05), "null"),
    "24x24": (0.50, 0.60, 0.62, 1.5, (0.05, 0.16), "repaired"),
    "32x32": (0.80, 0.80, 0.79, 1.0, (-0.01, 0.01), "null"),
    "64x32": (0.15, 0.17, 0.16, 1.0, (0.01, 0.03), "repaired"),
}


def make_study(folder, resolution, dense, pruned, poa, w, interval, verdict, rerank=True):
    config = load_experiment(None, resolution=resolution, **{"tracking.enabled": False})
    folder.mkdir(parents=True)
    (folder / "experiment.toml").write_text(config.replace(study=f"tb-{resolution}").to_toml())
    (folder / "study.json").write_text(json.dumps({"study_id": f"s-{resolution}"}))
    pd.DataFrame(
        [
            {"trial_id": "d", "trial_index": 0, "state": "COMPLETE", "score": dense - 0.01},
            {"trial_id": "a", "trial_index": 1, "state": "COMPLETE", "score": dense + 0.05},
        ]
        * 1
    ).assign(
        **{"ratio.down": [0.0, 0.9], "ratio.mid": [0.0, 0.5], "ratio.up": [0.0, 0.1]}
    ).to_parquet(folder / "trials.parquet")
    if not rerank:
        return folder
    winner = poa if w != 1.0 else pruned
    rows = [
        {"kind": "dense", "trial_id": "dense", "w": None, "score": dense},
        {"kind": "pruned", "trial_id": "a", "w": 1.0, "score": pruned},
        {"kind": "poa", "trial_id": "a", "w": 1.5, "score": poa},
    ]
    pd.DataFrame(rows).to_parquet(folder / "rerank.parquet")
    info = {
        "dense_score": dense,
        "n_prompts": 128,
        "heldout": {"prompts": 128, "seed": 10_000, "source": "grammar"},
        "winner": {
            "trial_id": "a",
            "w": w,
            "ratios": {"down": 0.9, "mid": 0.5, "up": 0.1},
            "score": winner,
            "score_delta": winner - dense,
            "delta_low": interval[0],
            "delta_high": interval[1],
            "p_vs_dense": 0.01,
            "wins": 10,
            "ties": 100,
            "losses": 18,
        },
        "verdict": {"status": verdict, "message": verdict},
    }
    (folder / "rerank.json").write_text(json.dumps(info))
    return folder


@pytest.fixture
def folders(tmp_path):
    return [make_study(tmp_path / f"tb-{r}", r, *v) for r, v in STUDIES.items()]


def test_map_rows_ceiling_and_gap_closed(folders):
    table = build_map(folders, training=(32, 32))
    # sorted by area, then width; the columns the README and docs rely on, in order
    assert list(table["resolution"]) == ["24x24", "32x32", "64x32", "48x48"]
    assert list(table.columns[: len(BASE_COLUMNS) + 3]) == [*BASE_COLUMNS, "down", "mid", "up"]
    row = table.set_index("resolution").loc["24x24"]
    assert (row["dense"], row["pruned"], row["poa"]) == (0.5, 0.6, 0.62)
    assert row["winner"] == "poa" and row["winner_w"] == 1.5
    assert row["delta"] == pytest.approx(0.12) and (row["delta_low"], row["delta_high"]) == (
        0.05,
        0.16,
    )
    assert row["verdict"] == "repaired" and row["down"] == 0.9
    assert (table["ceiling"] == 0.8).all()  # the dense score at the training size
    assert row["gap_closed"] == pytest.approx(0.12 / 0.30)
    assert math.isnan(table.set_index("resolution").loc["32x32", "gap_closed"])
    assert row["search_delta"] == pytest.approx(0.06) and row["search_trials"] == 2
    # without a training size there is no ceiling and no gap
    plain = build_map(folders)
    assert plain["ceiling"].isna().all() and plain["gap_closed"].isna().all()


def test_map_files_and_markdown(folders, tmp_path):
    table = build_map(folders, training=(32, 32))
    paths = write_map(table, tmp_path / "map", training=(32, 32), title="t")
    assert [p.name for p in paths] == ["map.csv", "map.png", "map.md"]
    again = pd.read_csv(paths[0])
    assert list(again["resolution"]) == list(table["resolution"])
    assert again["delta_low"].tolist() == pytest.approx(table["delta_low"].tolist())
    with Image.open(paths[1]) as image:
        assert image.width > 500 and image.height > 400
    md = format_markdown(table)
    assert md.count("\n") == 2 + len(table)
    assert "| 24x24 | 0.500 | 0.600 | 0.620 | +0.120 [+0.050, +0.160] (POA w=1.5) |" in md
    assert "| 40% |" in md and "repaired |" in md


def test_map_cli_from_folders_and_missing_reranks(folders, tmp_path, capsys):
    out = tmp_path / "docs"
    assert main(["map", *map(str, folders), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| 24x24 |" in printed and (out / "map.png").is_file()
    assert pd.read_csv(out / "map.csv")["ceiling"].eq(0.8).all()  # testbed: trained at 32x32
    bare = make_study(tmp_path / "bare", "40x40", *STUDIES["24x24"], rerank=False)
    assert main(["map", str(bare), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no held-out re-ranking" in err and "crdiff rerank" in err
    assert main(["map", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "neither a grid file nor a study folder" in capsys.readouterr().err
    with pytest.raises(UsageError, match="at least one"):
        build_map([])
