"""Every chapter runs end to end under papermill at the smoke profile (the book runs them at demo)."""
from pathlib import Path

import pytest

papermill = pytest.importorskip("papermill")

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_chapters():
    assert NOTEBOOKS


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke(nb, tmp_path):
    import json
    cells = json.loads(nb.read_text())["cells"]
    first_code = next(c for c in cells if c["cell_type"] == "code")
    assert "parameters" in first_code["metadata"].get("tags", []), "the first code cell must be tagged 'parameters'"
    assert "PROFILE" in "".join(first_code["source"])
    assert not any(c.get("outputs") or c.get("execution_count") for c in cells if c["cell_type"] == "code"), \
        "notebooks are kept without outputs"
    papermill.execute_notebook(str(nb), str(tmp_path / nb.name), parameters={"PROFILE": "smoke"},
                               cwd=str(tmp_path), kernel_name="python3", progress_bar=False)
