import pytest

from kyam_lib.data.synthetic import generate_shapes
from train_helpers import SMOKE_SHAPES


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A small generated shapes set under <root>/shapes (modules may define their own data_root)."""
    root = tmp_path_factory.mktemp("data")
    generate_shapes(root / "shapes", **SMOKE_SHAPES)
    return root
