"""The README's quickstart runs as written, from the repository's root."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_quickstart_runs(monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert '"emotion": "happy"' in printed  # the bundled photo's one face, as JSON
    assert namespace["emotion"] == "happy" and len(namespace["heatmaps"]) == 1
    assert namespace["wary"].min_confidence == 0.6
