"""The README's commands on the default study, run in order as a reader would (small budgets
added through flags), so that they cannot drift from what the CLI accepts."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# small budgets, added to the README's own arguments (nothing of them is replaced)
EXTRA = {
    "search": [
        "--trials", "4", "--set", "prompts.count=8", "--set", "rerank.prompts=16",
        "--set", "rerank.top_k=1",
    ],
    "rerank": ["--n-prompts", "16"],
    "export": ["--allow-null"],  # 4 trials on 8 prompts need not beat the dense model
}  # fmt: skip


def readme_commands() -> list[list[str]]:
    """The quick start's main command, then the workflow block's commands, as argv lists."""
    text = README.read_text()
    quick = re.search(r"```bash\n(bash scripts/setup\.sh && \.venv/bin/crdiff search)\n```", text)
    assert quick, "the README's quick start no longer shows the main command"
    block = re.search(
        r"<!-- readme-workflow.*?-->\n```bash\n(.*?)```\n<!-- /readme-workflow", text, re.S
    )
    assert block, "the README's workflow block is gone"
    lines = [quick.group(1).split("&& ", 1)[1]]
    lines += [ln.split("#", 1)[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    commands = []
    for line in lines:
        argv = shlex.split(line)
        assert argv[0] == ".venv/bin/crdiff", line
        commands.append(argv[1:])
    return commands


def test_the_readme_lists_the_workflow_in_order():
    names = [argv[0] for argv in readme_commands()]
    assert names == ["search", "rerank", "export", "registry", "registry", "generate"]


@pytest.mark.slow
def test_readme_commands_run_in_order_on_the_default_study(tmp_path):
    for argv in readme_commands():
        full = argv + EXTRA.get(argv[0], [])
        done = subprocess.run(
            [sys.executable, "-m", "crdiff_search.cli", *full],
            cwd=tmp_path, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert done.returncode == 0, (
            f"{' '.join(full)}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        )
    study = tmp_path / "runs" / "testbed"
    assert (study / "trials.parquet").is_file() and (study / "rerank.json").is_file()
    assert json.loads((study / "rerank.json").read_text())["winner"]
    images = sorted(p.name for p in (tmp_path / "images").glob("*.png"))
    assert "compare.png" in images and len(images) == 3
    assert (tmp_path / "images" / "recipe.json").is_file()
