"""`crdiff registry list|show` and `crdiff export` argument errors."""

from __future__ import annotations

import json

from test_recipe_roundtrip import make_recipe
from test_registry_core import fresh_registry_uri

from crdiff_search.cli import main
from crdiff_search.registry import Registry


def test_registry_list_and_show(tmp_path, capsys):
    uri = fresh_registry_uri(tmp_path)
    reg = Registry(uri)
    assert main(["registry", "list", "--registry", uri]) == 0
    assert "no recipes registered" in capsys.readouterr().out
    reg.export(make_recipe())
    reg.export(make_recipe(width=96, height=96, poa_w=2.0))
    assert main(["registry", "list", "--registry", uri]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["model", "resolution", "version"]
    assert [ln.split()[:3] for ln in lines[1:]] == [
        ["testbed", "64x48", "1"],
        ["testbed", "96x96", "2"],
    ]
    assert main(["registry", "list", "--registry", uri, "--json", "--all-versions"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    assert (
        main(["registry", "show", "--model", "testbed", "--resolution", "96x96", "--registry", uri])
        == 0
    )
    shown = json.loads(capsys.readouterr().out)
    assert (
        shown["version"] == 2 and shown["aliases"] == ["96x96"] and shown["recipe"]["poa_w"] == 2.0
    )
    assert (
        main(["registry", "show", "--model", "testbed", "--resolution", "90x90", "--registry", uri])
        == 2
    )
    assert "strict" in capsys.readouterr().err
    assert (
        main(
            [
                "registry",
                "show",
                "--model",
                "testbed",
                "--resolution",
                "90x90",
                "--nearest",
                "--registry",
                uri,
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["recipe"]["width"] == 96


def test_export_and_rerank_reject_a_folder_that_is_no_study(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "not a finished study folder" in capsys.readouterr().err
    assert main(["rerank", str(tmp_path), "--w", "1.5,abc"]) == 2
    assert "comma-separated numbers" in capsys.readouterr().err
    assert main(["rerank", str(tmp_path)]) == 2
    assert "missing trials.parquet" in capsys.readouterr().err
