"""The one home of continuous-capture chains: spans linked into a chain, lost ranges, the capture lock."""

import multiprocessing

import pytest

from ansible_collections.caas.backup.plugins.module_utils.chain import capture_lock, link, lost_range
from ansible_collections.caas.backup.plugins.module_utils.common import SourceError


def test_link_follows_contiguous_spans_and_stops_at_a_hole():
    spans = [(10, 20, "b"), (0, 10, "a"), (15, 18, "inside"), (20, 30, "c"), (35, 40, "after hole")]
    assert link(spans, 0) == (["a", "b", "c"], 30, 35)
    assert link(spans[:4], 0) == (["a", "b", "c"], 30, None)
    assert link([], 7) == ([], 7, None)
    assert link(spans, 50) == ([], 50, None)  # everything is behind the start


@pytest.mark.parametrize(
    ("position", "oldest", "lost"),
    [(100, 100, None), (100, 50, None), (100, 130, (100, 130)), (5, None, (5, None))],
)
def test_lost_range_is_what_retention_removed_before_capture(position, oldest, lost):
    assert lost_range(position, oldest) == lost


def _hold(path, ready, release):
    with capture_lock("kafka-messages", "cluster-a", path):
        ready.set()
        release.wait(10)


def test_capture_lock_refuses_a_second_holder_and_frees_with_the_process(tmp_path):
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        refused = r"another capture of cluster-a holds the lock since .*\(pid \d+"
        with pytest.raises(SourceError, match=refused), capture_lock("kafka-messages", "cluster-a", str(tmp_path)):
            pass
        with capture_lock("oplog", "cluster-a", str(tmp_path)) as other:  # another stream: its own lock
            assert other.endswith("caas-oplog-cluster-a.lock")
    finally:
        release.set()
        holder.join(10)
    with capture_lock("kafka-messages", "cluster-a", str(tmp_path)) as path:
        assert path == str(tmp_path / "caas-kafka-messages-cluster-a.lock")
