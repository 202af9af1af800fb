"""The README runs as written: its Python tour, and every command in its shell blocks.

Shell blocks (```bash) are split into commands (``\\``-continued lines joined, ``#`` comments
dropped) and each command into its ``&&`` steps. Every step is one test:

- ``fortis ...`` runs for real from the repository root (so ``../shared/data/mnist`` means what
  the README says), with ``--rounds`` cut to :data:`ROUNDS`, ``--quiet``, and ``--out`` (or
  ``deploy-local``'s ``--workdir``) in a temporary folder. It must exit 0 with no traceback and
  write its report with no failed row (``fortis certs``: its credentials, keys owner-only).
- ``pip install ...`` and ``python -m pytest ...`` are what ``.ci/run`` itself does before and
  while running this test, so they are checked against ``.ci/run`` rather than run again.
- Any other command fails this test until it is given a way to run here.

A block that needs something CI cannot have is marked in the README by the line
``<!-- readme-test: skip: REASON -->`` right before it; its steps are reported as skipped with
that reason.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI_SCRIPT = ROOT / ".ci" / "run"
#: Rounds per fortis command: enough to exercise every stage, few enough for CI.
ROUNDS = 2
SHELL_BLOCK = re.compile(
    r"(?:<!--\s*readme-test:\s*skip:\s*(?P<skip>[^\n]*?)\s*-->\s*\n)?```(?:bash|sh|shell)\n(?P<body>.*?)```",
    re.S,
)


@dataclass(frozen=True)
class Step:
    """One ``&&``-separated step of a README shell command."""

    block: int
    argv: tuple[str, ...]
    skip: str | None = None

    @property
    def id(self) -> str:
        return f"block{self.block}: {shlex.join(self.argv)}"


def shell_steps(text: str) -> list[Step]:
    """Every step of every command in ``text``'s shell blocks, in order."""
    steps = []
    for index, match in enumerate(SHELL_BLOCK.finditer(text)):
        body = re.sub(r"\\\n", " ", match["body"])
        for line in body.splitlines():
            tokens = shlex.split(line, comments=True)
            while tokens:
                step = tokens[: tokens.index("&&")] if "&&" in tokens else tokens
                steps.append(Step(index, tuple(step), match["skip"]))
                tokens = tokens[len(step) + 1 :]
    return steps


STEPS = shell_steps(README.read_text())


def test_readme_python_blocks_run_in_order():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    namespace: dict = {}
    for index, block in enumerate(blocks):  # later blocks may use names from earlier ones
        exec(compile(block, f"README.md python block {index}", "exec"), namespace)


def test_shell_blocks_are_parsed_into_steps():
    text = (
        "```bash\npip install a && fortis simulate   # a comment\n"
        "fortis matrix --attacks x \\\n    --defences y\n```\n"
        "<!-- readme-test: skip: needs a GPU -->\n```bash\nfortis simulate --gpu\n```\n"
        "```python\nprint('not shell')\n```\n"
    )
    assert shell_steps(text) == [
        Step(0, ("pip", "install", "a")),
        Step(0, ("fortis", "simulate")),
        Step(0, ("fortis", "matrix", "--attacks", "x", "--defences", "y")),
        Step(1, ("fortis", "simulate", "--gpu"), skip="needs a GPU"),
    ]
    # The README has commands of every kind this test knows.
    assert {s.argv[0] for s in STEPS} >= {"fortis", "pip", "python"}
    assert {s.argv[1] for s in STEPS if s.argv[0] == "fortis"} == {
        "simulate",
        "matrix",
        "deploy-local",
        "certs",
    }


def _ci_steps() -> list[list[str]]:
    steps = []
    for line in CI_SCRIPT.read_text().splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens[:3] == ["python", "-m", "pip"]:
            tokens = tokens[2:]
        if tokens:
            steps.append(tokens)
    return steps


def _requirements(argv: list[str] | tuple[str, ...]) -> list[tuple[str, set[str]]]:
    """``pip install`` arguments as (requirement, extras), options dropped."""
    out = []
    for arg in argv[2:]:
        if not arg.startswith("-"):
            base, _, extras = arg.partition("[")
            out.append((base, {e for e in extras.rstrip("]").split(",") if e}))
    return out


def _check_against_ci(step: Step) -> None:
    ci = _ci_steps()
    if step.argv[:2] == ("pip", "install"):
        installed = [req for s in ci if s[:2] == ["pip", "install"] for req in _requirements(s)]
        for base, extras in _requirements(step.argv):
            assert any(b == base and extras <= e for b, e in installed), (
                f"README installs {base}[{','.join(sorted(extras))}], which .ci/run does not"
            )
    else:
        assert list(step.argv) in ci, f"{step.id!r} is not a command of .ci/run"


def _fortis_argv(step: Step, out: Path) -> list[str]:
    """The step's command with ``--rounds`` cut to :data:`ROUNDS`, ``--quiet``, and its output
    folder (``--out``; ``--workdir`` for deploy-local) in ``out``."""
    script = Path(sys.executable).with_name("fortis")
    assert script.exists(), f"the fortis command is not installed next to {sys.executable}"
    command = step.argv[1]
    where = "--workdir" if command == "deploy-local" else "--out"
    replaced = ("--rounds", where, "-o") if command != "certs" else (where,)
    argv = [str(script)]
    args = list(step.argv[1:])
    while args:
        arg = args.pop(0)
        if arg in replaced:
            args.pop(0)  # replaced below
        elif not arg.startswith(tuple(f"{r}=" for r in replaced)):
            argv.append(arg)
    if command == "certs":
        return [*argv, "--out", str(out)]
    return [*argv, "--rounds", str(ROUNDS), "--quiet", where, str(out)]


def _strict_json(path: Path):
    def refuse(token):
        raise AssertionError(f"{path} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _run_fortis(step: Step, tmp_path: Path) -> None:
    if "../shared/data/mnist" in step.argv:
        mnist = (ROOT / "../shared/data/mnist").resolve()
        assert mnist.is_dir(), (
            f"{step.id!r} needs the MNIST IDX files in {mnist} (development and CI machines "
            "have them beside the repository)"
        )
    out = tmp_path / "out"
    proc = subprocess.run(
        _fortis_argv(step, out),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"{step.id!r} exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    if step.argv[1] == "certs":
        for name in ("ca.pem", "server.pem", "keyholder.pem", "client-0.pem", "client-0.sign.key"):
            assert (out / name).is_file(), name
        assert (out / "client-0.key").stat().st_mode & 0o077 == 0
        return
    if step.argv[1] == "deploy-local":
        out = out / "report"
    if step.argv[1] in ("simulate", "deploy-local"):
        rows = _strict_json(out / "results.json")
        assert rows, "no rows in results.json"
        for name, row in rows.items():
            status = row["summary"]["status"]
            assert status in ("completed", "diverged"), f"{name}: {row['summary']['reason']}"
            if status == "completed":
                assert row["summary"]["rounds_run"] == ROUNDS, name
        assert (out / "summary.md").stat().st_size > 0
        assert (out / "accuracy.png").stat().st_size > 0
    else:
        cells = _strict_json(out / "matrix.json")["cells"]
        assert cells and all(c["status"] != "failed" for c in cells)
        assert (out / "matrix.md").stat().st_size > 0
        assert (out / "matrix.png").stat().st_size > 0


@pytest.mark.parametrize("step", STEPS, ids=[s.id for s in STEPS])
def test_readme_shell_command(step: Step, tmp_path: Path) -> None:
    if step.skip:
        pytest.skip(f"marked in the README: {step.skip}")
    if step.argv[0] == "fortis":
        _run_fortis(step, tmp_path)
    elif step.argv[:2] == ("pip", "install") or step.argv[:3] == ("python", "-m", "pytest"):
        _check_against_ci(step)
    else:
        pytest.fail(f"README command {step.id!r} has no way to run in this test: add one")
