"""The README's set-up commands are the ones CI runs, and its examples are true."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL)


def test_ci_runs_the_readme_set_up_commands():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    install, test = (block.strip() for block in _bash_blocks(readme)[:2])
    assert install == 'python -m pip install ".[demo]" && skfeat demo'
    assert test == 'python -m pip install ".[test]" && python -m pytest'
    assert install in ci  # CI may add options after the demo command
    assert f"\n{test}\n" in ci


def test_readme_doctest_block_is_true():
    import doctest

    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    examples = "\n".join(block for block in blocks if ">>>" in block)
    test = doctest.DocTestParser().get_doctest(examples, {}, "README", "README.md", 0)
    assert test.examples, "the README should hold a runnable >>> example"
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.failures == 0
