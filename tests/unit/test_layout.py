"""pytest collects tests/unit and tests/integration in one session with rootdir-relative imports: two test
modules of one basename break the collection of the second (an "import file mismatch"), so each is unique."""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_module_basenames_are_unique():
    names = Counter(path.name for path in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
