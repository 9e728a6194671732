"""docs/clients.md's vendor SDK examples, run as written against a real kallm (on the stand-in
provider): only the base URL is swapped for this kallm's, and each must print an answer."""

import contextlib
import io
import re
from pathlib import Path

import pytest

DOC = (Path(__file__).resolve().parents[2] / "docs" / "clients.md").read_text()
EXAMPLES = dict(re.findall(r"<!-- run: (\w+) -->\n```python\n(.*?)```", DOC, re.S))


def test_the_doc_marks_the_three_sdk_examples():
    assert set(EXAMPLES) == {"openai", "anthropic", "gemini"}


@pytest.mark.parametrize("name", ["openai", "anthropic", "gemini"])
def test_an_sdk_example_runs_against_kallm_as_written(name, kallm):
    code = EXAMPLES[name].replace("http://localhost:8080", kallm.root)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, f"docs/clients.md ({name})", "exec"), {})
    # The stand-in's answer, through kallm (from upstream, or cached by an earlier test).
    assert "Simulated answer" in printed.getvalue()
