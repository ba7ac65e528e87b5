"""``crdiff prune-report`` on tiny models saved by the test."""

from __future__ import annotations

import json

import pytest

from crdiff_search import testing
from crdiff_search.cli import main


@pytest.fixture(scope="module")
def unet_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "unet"
    testing.tiny_unet(seed=1).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dit_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "dit"
    testing.tiny_dit(seed=1).save_pretrained(path)
    return path


def test_table_for_a_saved_unet(unet_dir, capsys):
    code = main(["prune-report", "--model", str(unet_dir), "--ratios", "down=0.3,mid=0.3,up=0.5"])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert "UNet2DConditionModel" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.startswith("group"))
    assert lines[header].split() == ["group", "tensors", "numel", "requested", "pruned", "sparsity"]
    rows = {line.split()[0]: line.split() for line in lines[header + 2 : header + 6]}
    assert rows["down"] == ["down", "12", "131,072", "0.3000", "39,321", "0.3000"]
    assert rows["mid"] == ["mid", "6", "65,536", "0.3000", "19,660", "0.3000"]
    assert rows["up"] == ["up", "18", "196,608", "0.5000", "98,304", "0.5000"]
    assert rows["total"][1:3] == ["36", "393,216"]
    assert "pruned 157,285 weights" in out


def test_json_per_tensor_and_transformer_block(dit_dir, capsys):
    code = main(
        ["prune-report", "--model", str(dit_dir), "--partition", "block", "--n-groups", "3",
         "--criterion", "magnitude-tensor", "--ratios", "0.25", "--json"]
    )  # fmt: skip
    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["model_class"] == "DiTTransformer2DModel"
    assert data["partition"] == "block/3"
    assert data["ratios"] == {"blocks.0-1": 0.25, "blocks.2-3": 0.25, "blocks.4-5": 0.25}
    assert [g["group"] for g in data["groups"]] == [
        "blocks.0-1",
        "blocks.2-3",
        "blocks.4-5",
        "total",
    ]
    assert len(data["tensors"]) == 36
    for row in data["tensors"]:  # per-tensor criterion: exact count in every tensor
        assert row["zeros"] == int(row["numel"] * 0.25)
    assert data["pruned_params"] == sum(r["pruned"] for r in data["tensors"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ratios", "down=1.2"], "must be in [0, 1), got 1.2"),
        (["--ratios", "down=x"], "must be a number"),
        (["--ratios", "left=0.3"], "unknown group(s) 'left'; valid: down, mid, up"),
        (["--partition", "layers"], "valid: paper, block, kind"),
        (["--criterion", "l2"], "valid: auto, magnitude, magnitude-tensor, random"),
        (["--include", "convs"], "valid: self_attn, cross_attn, ff, resnet"),
        (["--n-groups", "2"], "transformer partitions only"),
        (["--dtype", "int8"], "valid: float32, float16, bfloat16"),
    ],
)
def test_bad_input_exits_2(unet_dir, capsys, args, message):
    assert main(["prune-report", "--model", str(unet_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("crdiff prune-report: error:")
    assert message in err


def test_missing_model_exits_4_and_foreign_folder_exits_2(tmp_path, capsys):
    assert main(["prune-report", "--model", str(tmp_path / "absent")]) == 4  # a model source
    assert "cannot load model" in capsys.readouterr().err
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    assert main(["prune-report", "--model", str(tmp_path)]) == 2
    assert "AutoencoderKL" in capsys.readouterr().err
