"""The SVG text of a svg_timeline.Timeline: written here rather than by a template because a
day of marks is thousands of elements (a Jinja loop took 0.3 s for a day of a flapping probe;
this takes a tenth of that). Every text and attribute value goes through markupsafe.escape; no
``style`` attribute (the app CSP allows styles from /static only: colours are admin.css classes)
and no script."""
from __future__ import annotations

from markupsafe import Markup, escape

from webmail.admin.svg_timeline import Timeline


def _n(v: float) -> str:
    """A coordinate: at most two decimals, no trailing zeros."""
    return f"{v:.2f}".rstrip("0").rstrip(".")


def render_svg(tl: Timeline) -> Markup:
    """The ``<svg id="timeline">`` element of ``tl`` (role img, with title and desc)."""
    out = [
        (f'<svg class="timeline" id="timeline" role="img" aria-labelledby="tl-title tl-desc"'
         f' xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_n(tl.width)} {_n(tl.height)}"'
         f' data-range="{escape(tl.range_name)}" data-start="{tl.start:.0f}" data-end="{tl.end:.0f}"'
         f' data-bucket="{tl.bucket:g}">'),
        f'<title id="tl-title">{escape(tl.title)}</title>',
        f'<desc id="tl-desc">{escape(tl.desc)}</desc>',
        '<g class="grid">',
    ]
    for x, label in tl.ticks:
        out.append(f'<line class="tick" x1="{_n(x)}" x2="{_n(x)}" y1="{_n(tl.band_y)}" y2="{_n(tl.plot_bottom)}"/>'
                   f'<text class="tick-label" x="{_n(x)}" y="{_n(tl.plot_bottom + 16)}" text-anchor="middle">'
                   f'{escape(label)}</text>')
    out.append("</g>")
    out.append(f'<text class="lane-label" x="4" y="{_n(tl.band_y + 13)}">state</text><g class="bands">')
    for b in tl.bands:
        out.append(f'<rect class="band mode-{escape(b.mode)}" data-mode="{escape(b.mode)}" data-t0="{b.t0:.3f}"'
                   f' data-t1="{b.t1:.3f}" x="{_n(b.x)}" y="{_n(tl.band_y)}" width="{_n(b.w)}"'
                   f' height="{_n(tl.band_h)}"><title>{escape(b.title)}</title></rect>')
    if not tl.bands:
        out.append(f'<text class="empty" x="{_n(tl.left + 4)}" y="{_n(tl.band_y + 13)}">no continuity state'
                   ' recorded</text>')
    out.append("</g>")
    for lane in tl.lanes:
        y = lane.y
        out.append(f'<g class="lane" data-probe="{escape(lane.probe)}" data-ok="{lane.ok}" data-fail="{lane.fail}">'
                   f'<text class="lane-label" x="4" y="{_n(y + 11)}">{escape(lane.probe[:16])}</text>'
                   f'<text class="lane-sub" x="{_n(tl.left - 6)}" y="{_n(y + 10)}" text-anchor="end">ok</text>'
                   f'<text class="lane-sub" x="{_n(tl.left - 6)}" y="{_n(y + 24)}" text-anchor="end">fail</text>'
                   f'<text class="lane-sub" x="{_n(tl.left - 6)}" y="{_n(y + 44)}" text-anchor="end">latency</text>'
                   f'<line class="lane-rule" x1="{_n(tl.left)}" x2="{_n(tl.left + tl.plot)}" y1="{_n(y + 54)}"'
                   f' y2="{_n(y + 54)}"/>')
        for kind, marks in (("ok", lane.ok_marks), ("fail", lane.fail_marks)):
            for m in marks:
                out.append(f'<rect class="mark {kind}" data-count="{m.count}" data-t0="{m.t0:.0f}"'
                           f' x="{_n(m.x)}" y="{_n(m.y)}" width="{_n(m.w)}" height="{_n(m.h)}">'
                           f'<title>{escape(m.title)}</title></rect>')
        if lane.latency_points:
            out.append(f'<polyline class="latency" points="{escape(lane.latency_points)}"><title>'
                       f'{escape(lane.probe)} latency, worst per bucket: up to {lane.latency_max * 1000:.0f} ms'
                       '</title></polyline>')
        out.append("</g>")
    out.append('<g class="audit-marks">')
    for a in tl.audit_marks:
        x = a.x
        out.append(f'<a href="#audit-{a.row["id"]:d}" class="audit-mark {a.kind}" data-audit-id="{a.row["id"]:d}">'
                   f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{_n(tl.band_y - 4)}" y2="{_n(tl.plot_bottom)}"/>'
                   f'<path d="M{_n(x - 4)},{_n(tl.band_y - 8)} h8 l-4,6 z"/><title>{escape(a.title)}</title></a>')
    out.append("</g></svg>")
    return Markup("\n".join(out))


__all__ = ["render_svg"]
