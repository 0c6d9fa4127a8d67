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
