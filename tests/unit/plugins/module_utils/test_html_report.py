"""The static HTML pages: what they show, escaped, with nothing external."""

import datetime
import html.parser
import re

from ansible_collections.caas.backup.plugins.module_utils import html_report, site

NOW = datetime.datetime(2026, 2, 21, 12, 0, tzinfo=datetime.timezone.utc)


class Page(html.parser.HTMLParser):
    """The visible text and the tags of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.words: list[str] = []
        self.tags: list[tuple[str, dict]] = []
        self.hidden = 0
        self.feed(text)

    def handle_starttag(self, tag, attrs) -> None:
        self.tags.append((tag, dict(attrs)))
        self.hidden += tag in ("style", "title")

    def handle_endtag(self, tag) -> None:
        self.hidden -= tag in ("style", "title")

    def handle_data(self, data) -> None:
        if not self.hidden:
            self.words.extend(data.split())

    @property
    def text(self) -> str:
        return " ".join(self.words)


def self_contained(page: Page) -> None:
    assert not [t for t, _a in page.tags if t in ("script", "link", "img", "iframe")]
    assert not [a for _t, a in page.tags if any(str(v).startswith(("http:", "https:", "//")) for v in a.values())]


def drill(status="PASS", source="cache01"):
    checks = site.dr_checks({"keys": 15}, "redis", {"facts": {"keys": 15 if status == "PASS" else 3}})
    results = [
        {
            "component": "redis",
            "host": "cache01",
            "source": source,
            "backup_id": "20260221T020000.000Z-aaaa",
            "status": "PASS",
            "data_time": "2026-02-21T06:00:00Z",
            "checks": [dict(c, production=22) for c in checks],
        }
    ]
    marks = [
        [["assess", "2026-02-21T10:00:00Z"], ["restore", "2026-02-21T10:01:00Z"], ["done", "2026-02-21T10:04:00Z"]]
    ]
    report = site.dr_report(results, "2026-02-21T10:00:00Z", "2026-02-21T10:05:00Z", marks)
    report["drill"] = {"point_in_time": "random", "targets": {"redis@cache01": "redis://127.0.0.1:6399/0"}}
    report["target_time"] = "2026-02-21T09:30:00Z"
    return report


def test_the_drill_page_shows_the_verdict_objectives_and_each_check_beside_production():
    page = Page(html_report.drill_page(drill()))
    self_contained(page)
    text = page.text
    assert "DR drill 2026-02-21T10:00:00Z PASS" in text
    assert "RTO (drill duration) 5m00s 4h00m00s met" in text
    assert "RPO (age of the restored data) 4h00m00s 6h00m00s met" in text  # the data is 4 h old
    assert "to the point in time 2026-02-21T09:30:00Z (random point)" in text
    assert "redis@cache01 redis://127.0.0.1:6399/0" in text
    assert "redis cache01 cache01 20260221T020000.000Z-aaaa 2026-02-21T06:00:00Z 1/1" in text
    assert "key count 15 15 22 ok" in text
    assert "never pass or fail a drill" in text
    assert "assess 1m00s" in text and "restore 3m00s" in text


def test_a_failed_drill_page_says_what_failed():
    report = drill("FAIL")
    report["drill"]["targets"] = {}
    text = Page(html_report.drill_page(report)).text
    assert "Scratch targets: none accepted." in text
    assert "DR drill 2026-02-21T10:00:00Z FAIL" in text and "key count 15 3 22 bad" in text
    assert "Failed redis@cache01" in text


def test_every_value_is_escaped():
    hostile = "<script>alert(1)</script>"
    page = html_report.drill_page(drill(source=hostile))
    assert hostile not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    summary = {
        "latest": [],
        "pitr": {},
        "alerts": [{"severity": "<b>", "kind": "k", "source": hostile, "message": "m"}],
    }
    status = html_report.status_page(summary, [], None, NOW)
    assert hostile not in status and "<b>" not in status


def sets_of(kind, source, times, size=1000, broken=()):
    return [
        {
            "kind": kind,
            "source": source,
            "backup_id": f"{t}-{n:04x}",
            "time": t,
            "size": size,
            "complete": n not in broken,
            "error": "bad manifest" if n in broken else None,
        }
        for n, t in enumerate(times)
    ]


def test_the_status_page_shows_each_source_its_timeline_window_gaps_verification_and_drill():
    sets = sets_of("mongo-full", "rs0", ["2026-02-20T02:00:00Z", "2026-02-21T02:00:00Z"], 2048, broken=(1,))
    sets += sets_of("redis-rdb", "cache01", ["2026-02-21T06:00:00Z"], 3 * 1024 * 1024)
    summary = {
        "latest": [
            {
                "kind": "mongo-full",
                "source": "rs0",
                "time": "2026-02-20T02:00:00Z",
                "age_seconds": 122400,
                "size": 2048,
                "count": 1,
                "incomplete": 1,
                "total_size": 4096,
                "verification": {"ok": True, "level": "restore", "verified_at": "2026-02-20T03:00:00Z"},
            },
            {
                "kind": "redis-rdb",
                "source": "cache01",
                "time": "2026-02-21T06:00:00Z",
                "age_seconds": 21600,
                "size": 3 * 1024 * 1024,
                "count": 1,
                "incomplete": 0,
                "total_size": 3 * 1024 * 1024,
                "verification": None,
            },
        ],
        "pitr": {
            "rs0": {
                "earliest": "2026-02-20T02:00:00Z",
                "latest": "2026-02-21T11:00:00Z",
                "gaps": [{"from": "2026-02-20T12:00:00Z", "to": "2026-02-20T13:00:00Z"}],
            }
        },
        "alerts": [{"severity": "warning", "kind": "mongo-oplog", "source": "rs0", "message": "point-in-time gap"}],
    }
    last = dict(drill(), drill_id="20260221T100000Z", evidence="drills/20260221T100000Z/")
    page_text = html_report.status_page(summary, sets, last, NOW)
    page = Page(page_text)
    self_contained(page)
    text = page.text
    assert "As of 2026-02-21T12:00:00Z: 2 source(s), 3 set(s)" in text
    assert (
        "mongo-full rs0 1 complete, 1 incomplete 2.0 KiB newest, 4.0 KiB all 2026-02-20T02:00:00Z (34h00m00s ago)"
        in text
    )
    assert "ok (restore, 2026-02-20T03:00:00Z)" in text
    assert "redis-rdb cache01 1 complete, 0 incomplete 3.0 MiB newest" in text and "never" in text
    assert "rs0 2026-02-20T02:00:00Z to 2026-02-21T11:00:00Z 2026-02-20T12:00:00Z to 2026-02-20T13:00:00Z" in text
    assert "2026-02-21T10:00:00Z PASS 5m00s (objective 4h00m00s)" in text
    assert "drills/20260221T100000Z/report.html" in text
    assert "Alerts (1) warning mongo-oplog/rs0: point-in-time gap" in text
    # One mark per set on its source's timeline, as tall as its size: green complete, red broken.
    marks = re.findall(r'<rect class="set" x="[\d.]+" y="\d+" width="4" height="(\d+)" fill="(#[0-9a-f]+)"', page_text)
    assert marks == [("16", "#1a7f37"), ("16", "#cf222e"), ("16", "#1a7f37")]
    sets[0]["size"] = 512  # a quarter of the largest of its source
    smaller = re.findall(
        r'class="set" x="[\d.]+" y="(\d+)" width="4" height="(\d+)"', html_report.status_page(summary, sets, last, NOW)
    )
    assert smaller[0] == ("11", "7")
    # The window in blue, its gap in red.
    assert len(re.findall(r'y="4" width="[\d.]+" height="12" fill="#cf222e"', page_text)) == 1


def test_the_status_page_without_sets_or_drill():
    text = Page(html_report.status_page({"latest": [], "pitr": {}, "alerts": []}, [], None, NOW)).text
    assert (
        "0 source(s), 0 set(s)" in text and "No drill evidence in the storage." in text and "Alerts (0) None." in text
    )


def test_sizes_and_durations():
    assert [html_report.size(n) for n in (None, 0, 1023, 1536, 5 * 1024**3, 3 * 1024**4)] == [
        "-",
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 GiB",
        "3072.0 GiB",
    ]
    assert [html_report.duration(s) for s in (None, 0.42, 65, 3725)] == ["-", "0.4s", "1m05s", "1h02m05s"]
