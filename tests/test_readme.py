"""The README's Python snippets run as written."""

import re
from pathlib import Path

README = (Path(__file__).parents[1] / "README.md").read_text()


def test_the_readmes_python_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    snippets = re.findall(r"```python\n(.*?)```", README, re.S)
    assert snippets
    namespace: dict = {}
    for code in snippets:  # in order: a later snippet may use an earlier one's names
        exec(compile(code, "README.md", "exec"), namespace)
