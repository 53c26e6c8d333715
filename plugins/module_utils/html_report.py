# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Static HTML pages for people who would rather look: a drill's report, and the catalog's status page.

Standard library only; every value is escaped; no script, no external asset (styles and the timelines' SVG are
inline), so a page opens from the storage or a mail attachment as it is.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from html import escape

from ansible_collections.caas.backup.plugins.module_utils.evidence import HTML

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f23;background:#fff}
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 8px}
table{border-collapse:collapse;margin:4px 0 12px}th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left}
th{background:#f6f8fa}.PASS,.ok{color:#1a7f37;font-weight:600}.FAIL,.FAILED,.bad{color:#cf222e;font-weight:600}
.PLANNED,.warning{color:#9a6700;font-weight:600}.banner{display:inline-block;padding:6px 14px;border-radius:6px;
color:#fff;font-weight:700;font-size:18px}.banner.PASS{background:#1a7f37;color:#fff}
.banner.FAIL{background:#cf222e;color:#fff}.note{color:#57606a;max-width:60em}
.bar{display:inline-block;height:12px;background:#0969da;vertical-align:middle}
svg{vertical-align:middle}.critical{color:#cf222e;font-weight:600}
"""


def _e(value) -> str:
    return escape("-" if value is None or value == "" else str(value))


def _page(title: str, body: list[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _table(header: list[str], rows: Iterable[list[str]], raw_columns: tuple[int, ...] = ()) -> str:
    """A table; cells are escaped except the columns in ``raw_columns`` (already HTML)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = "".join(f"<td>{c if i in raw_columns else _e(c)}</td>" for i, c in enumerate(row))
        lines.append(f"<tr>{cells}</tr>")
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


def _status(value: str) -> str:
    return f'<span class="{escape(str(value))}">{_e(value)}</span>'


def duration(seconds) -> str:
    """``1h02m03s`` / ``2m05s`` / ``0.4s``; ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def size(value) -> str:
    """Bytes in B, KiB, MiB, GiB."""
    if value is None:
        return "-"
    amount, unit = float(value), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if amount < 1024:
            break
        amount, unit = amount / 1024, bigger
    return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"


def drill_page(report: Mapping) -> str:
    """The drill's report as a page: the verdict, RTO and RPO against the objectives, per component the set
    restored and every check - the backup's value, the restored value, production's value now (shown, never
    judged) - and the phases."""
    result = str(report.get("result") or "FAIL")
    drill = report.get("drill") or {}
    target = report.get("target_time")
    body = [
        f"<h1>DR drill {_e(report.get('started_at'))}</h1>",
        f'<p><span class="banner {escape(result)}" id="result">{_e(result)}</span></p>',
        _table(
            ["measure", "value", "objective", "verdict"],
            [
                [
                    "RTO (drill duration)",
                    duration(report.get("rto_seconds")),
                    duration(report.get("rto_objective_seconds")),
                    _status("met" if report.get("rto_met") else "MISSED"),
                ],
                [
                    "RPO (age of the restored data)",
                    duration(report.get("rpo_seconds")),
                    duration(report.get("rpo_objective_seconds")),
                    _status("met" if report.get("rpo_met") else "MISSED"),
                ],
            ],
            raw_columns=(3,),
        ),
        "<p>"
        + f"Started {_e(report.get('started_at'))}, finished {_e(report.get('finished_at'))}. A drill of "
        + (f"a restore to the point in time {_e(target)}" if target else "the latest backups")
        + (f" ({_e(drill.get('point_in_time'))} point)" if drill.get("point_in_time") else "")
        + ". Scratch targets: "
        + _e(", ".join(f"{k} {v}" for k, v in sorted((drill.get("targets") or {}).items())) or "none accepted")
        + ".</p>",
        "<h2>Components</h2>",
        _table(
            ["component", "host", "source", "backup", "data as of", "checks", "duration", "status"],
            (
                [
                    c.get("component"),
                    c.get("host"),
                    c.get("source"),
                    c.get("backup_id"),
                    c.get("data_time"),
                    f"{sum(1 for k in c.get('checks') or () if k.get('ok'))}/{len(c.get('checks') or ())}",
                    duration(c.get("duration")),
                    _status(c.get("status") or "FAILED"),
                ]
                for c in report.get("components") or ()
            ),
            raw_columns=(7,),
        ),
    ]
    for c in report.get("components") or ():
        body.append(f"<h2>{_e(c.get('component'))} on {_e(c.get('host'))}</h2>")
        if c.get("error"):
            body.append(f'<p class="bad">{_e(c["error"])}</p>')
        production = c.get("production") or {}
        if production and not production.get("reachable"):
            body.append(f'<p class="note">Production not compared: {_e(production.get("error"))}</p>')
        if c.get("checks"):
            body.append(
                _table(
                    ["check", "backup (manifest)", "restored", "production now", "result"],
                    (
                        [
                            k.get("check"),
                            k.get("expected"),
                            k.get("found"),
                            k.get("production"),
                            _status("ok" if k.get("ok") else "bad"),
                        ]
                        for k in c["checks"]
                    ),
                    raw_columns=(4,),
                )
            )
    body.append(
        "<p class=\"note\">Pass or fail is the restored data against its backup's manifest. Production's current "
        "values are shown beside them: production moved on since the backup was taken, so they differ, and they "
        "never pass or fail a drill.</p>"
    )
    phases = report.get("phases") or {}
    if phases:
        longest = max(float(s) for s in phases.values()) or 1.0
        body.append("<h2>Phases</h2>")
        body.append(
            _table(
                ["phase", "duration", ""],
                (
                    [
                        name,
                        duration(s),
                        f'<span class="bar" style="width:{max(1, round(300 * float(s) / longest))}px"></span>',
                    ]
                    for name, s in phases.items()
                ),
                raw_columns=(2,),
            )
        )
    if report.get("failed"):
        body.append("<h2>Failed</h2><ul>" + "".join(f"<li>{_e(f)}</li>" for f in report["failed"]) + "</ul>")
    return _page(f"DR drill {report.get('started_at')}: {result}", body)


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


_WIDTH = 480


def _timeline(sets: list[Mapping], start: float, end: float) -> str:
    """An SVG strip: one mark per set at its time, as tall as its size is against the largest (4 to 16 px),
    green complete, red broken, grey incomplete."""
    span = max(end - start, 1.0)
    largest = max((s.get("size") or 0 for s in sets), default=0) or 1
    marks = []
    for s in sets:
        x = 4 + (_epoch(s["time"]) - start) / span * (_WIDTH - 8)
        height = 4 + round(12 * (s.get("size") or 0) / largest)
        colour = "#1a7f37" if s.get("complete") else ("#cf222e" if s.get("error") else "#8c959f")
        label = f"{s.get('backup_id')} {s.get('time')} {size(s.get('size'))}"
        marks.append(
            f'<rect class="set" x="{x - 2:.1f}" y="{18 - height}" width="4" height="{height}" fill="{colour}">'
            f"<title>{_e(label)}</title></rect>"
        )
    return (
        f'<svg width="{_WIDTH}" height="20" role="img"><rect x="0" y="9" width="{_WIDTH}" height="2" fill="#d0d7de"/>'
        + "".join(marks)
        + "</svg>"
    )


def _window(pitr: Mapping, start: float, end: float) -> str:
    """An SVG strip of a point-in-time window (blue) and its gaps (red)."""
    span = max(end - start, 1.0)

    def x(text: str) -> float:
        return 4 + (_epoch(text) - start) / span * (_WIDTH - 8)

    parts = [f'<rect x="0" y="9" width="{_WIDTH}" height="2" fill="#d0d7de"/>']
    left, right = x(pitr["earliest"]), x(pitr["latest"])
    parts.append(f'<rect x="{left:.1f}" y="4" width="{max(right - left, 2):.1f}" height="12" fill="#0969da"/>')
    for gap in pitr.get("gaps") or ():
        a, b = x(gap["from"]), x(gap["to"])
        parts.append(f'<rect x="{a:.1f}" y="4" width="{max(b - a, 2):.1f}" height="12" fill="#cf222e"/>')
    return f'<svg width="{_WIDTH}" height="20" role="img">{"".join(parts)}</svg>'


def _against(report: Mapping, measure: str) -> str:
    got, objective = report.get(f"{measure}_seconds"), report.get(f"{measure}_objective_seconds")
    return f"{duration(got)} (objective {duration(objective)})"


def status_page(info: Mapping, sets: list[Mapping], drill: Mapping | None, now: datetime.datetime) -> str:
    """The catalog as a status page: per kind and source a timeline of its sets, their count and sizes, the
    newest set's age and last verification; per MongoDB source the point-in-time window and its gaps; the
    alerts; the last drill. ``info`` is backup_info's result (``latest``, ``pitr``, ``alerts``), ``sets`` every
    set's summary (:meth:`BackupSet.summary`), ``drill`` :func:`evidence.latest_drill`'s report."""
    times = [_epoch(s["time"]) for s in sets]
    for window in (info.get("pitr") or {}).values():
        times += [_epoch(window[k]) for k in ("earliest", "latest") if window.get(k)]
    start, end = (min(times), max(times)) if times else (0.0, 1.0)
    stamp = now.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    body = [
        "<h1>Backup status</h1>",
        f"<p>As of {_e(stamp)}: {len(info.get('latest') or ())} source(s), {len(sets)} set(s). Timelines run from "
        f"{_e(_iso(start) if times else None)} to {_e(_iso(end) if times else None)}.</p>",
        "<h2>Sets per kind and source</h2>",
    ]
    by_source: dict[tuple[str, str], list[Mapping]] = {}
    for s in sets:
        by_source.setdefault((s["kind"], s["source"]), []).append(s)
    rows = []
    for entry in info.get("latest") or ():
        group = by_source.get((entry["kind"], entry["source"]), [])
        verification = entry.get("verification") or {}
        verified = "never"
        if verification:
            verdict = "ok" if verification.get("ok") else "FAILED"
            verified = f"{verdict} ({verification.get('level')}, {verification.get('verified_at')})"
        rows.append(
            [
                entry["kind"],
                entry["source"],
                f"{entry.get('count')} complete, {entry.get('incomplete')} incomplete",
                f"{size(entry.get('size'))} newest, {size(entry.get('total_size'))} all",
                f"{entry.get('time')} ({duration(entry.get('age_seconds'))} ago)",
                verified,
                _timeline(group, start, end),
            ]
        )
    body.append(
        _table(["kind", "source", "sets", "size", "newest", "last verification", "timeline"], rows, raw_columns=(6,))
    )
    pitr = info.get("pitr") or {}
    if pitr:
        body.append("<h2>Point-in-time windows (MongoDB)</h2>")
        prows = []
        for source, window in sorted(pitr.items()):
            gaps = window.get("gaps") or []
            prows.append(
                [
                    source,
                    f"{window.get('earliest')} to {window.get('latest')}" if window.get("earliest") else "no window",
                    "; ".join(f"{g['from']} to {g['to']}" for g in gaps) or "none",
                    _window(window, start, end) if window.get("earliest") else "",
                ]
            )
        body.append(_table(["source", "window", "gaps", ""], prows, raw_columns=(3,)))
    body.append("<h2>Last DR drill</h2>")
    if drill:
        body.append(
            _table(
                ["drill", "result", "RTO", "RPO", "evidence"],
                [
                    [
                        drill.get("started_at") or drill.get("drill_id"),
                        _status(drill.get("result") or "FAIL"),
                        _against(drill, "rto"),
                        _against(drill, "rpo"),
                        f"{drill.get('evidence')}{HTML}" + (f" - {drill['error']}" if drill.get("error") else ""),
                    ]
                ],
                raw_columns=(1,),
            )
        )
    else:
        body.append("<p>No drill evidence in the storage.</p>")
    alerts = info.get("alerts") or []
    body.append(f"<h2>Alerts ({len(alerts)})</h2>")
    if alerts:
        body.append(
            "<ul>"
            + "".join(
                f'<li><span class="{escape(str(a.get("severity")))}">{_e(a.get("severity"))}</span> '
                f"{_e(a.get('kind'))}/{_e(a.get('source'))}: {_e(a.get('message'))}</li>"
                for a in alerts
            )
            + "</ul>"
        )
    else:
        body.append("<p>None.</p>")
    return _page("Backup status", body)


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat().replace("+00:00", "Z")
