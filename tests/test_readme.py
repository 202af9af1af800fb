"""The README's Python tour must run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for index, block in enumerate(blocks):  # later blocks may use names from earlier ones
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)
