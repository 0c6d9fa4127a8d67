"""The README's Python example runs as written."""
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README.md has no ```python example"
    namespace = {}
    exec(compile(blocks[0], str(README), "exec"), namespace)
    model, p = namespace["model"], namespace["p"]
    assert p.shape == (4,) and ((p > 0) & (p < 1)).all()
    assert set(namespace["dense_grads"]) == set(model.state_dict())


def test_readme_mpi_example_runs(tmp_path):
    """The multi-process example of the README, as written (outputs moved to tmp_path)."""
    import shlex

    from mpirun import run_mpi
    lines = README.read_text().replace("\\\n", " ").splitlines()
    command = next(c for c in lines if c.startswith(".venv/bin/mpiexec -n"))
    words = shlex.split(command.replace("runs/", f"{tmp_path}/"))
    assert words[0] == ".venv/bin/mpiexec" and words[1] == "-n" and words[3] == ".venv/bin/python"
    proc = run_mpi(int(words[2]), words[4:], timeout=300, env={})
    assert "Final held-out evaluation: auc 0.7" in proc.stdout
    assert (tmp_path / "mpi-ckpt.h5").exists() and (tmp_path / "mpi.jsonl").exists()
