"""One self-contained HTML page about a run: its settings, its scores, every plot.

The images are embedded as ``data:`` URIs and the styles are inline, so the
page opens in any browser from disk, with no server and nothing fetched.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

from digitnet import __version__, metrics
from digitnet.data.formats import atomic_path
from digitnet.errors import DigitnetError
from digitnet.viz import plots, style
from digitnet.viz.run import Run

CSS = """
body { font-family: "DejaVu Sans", "Segoe UI", Helvetica, Arial, sans-serif; color: #1d2024; margin: 0;
       background: #f4f5f7; line-height: 1.45; }
main { max-width: 1280px; margin: 0 auto; padding: 24px 32px 64px; }
h1 { font-size: 26px; margin: 8px 0 4px; } h2 { font-size: 19px; margin: 36px 0 6px; }
.sub { color: #5a5f66; margin: 0 0 18px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: white; border-radius: 8px; padding: 12px 18px; min-width: 150px;
        box-shadow: 0 1px 3px rgba(0,0,0,.12); }
.card .v { font-size: 24px; font-weight: bold; color: #3566a8; } .card .k { color: #5a5f66; font-size: 13px; }
.tables { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
table { border-collapse: collapse; background: white; box-shadow: 0 1px 3px rgba(0,0,0,.12); font-size: 14px; }
th, td { padding: 5px 12px; text-align: right; border-bottom: 1px solid #e3e5e8; }
th { background: #eef0f3; } td:first-child, th:first-child { text-align: left; }
tr.worst td { color: #c8372d; font-weight: bold; }
figure { background: white; margin: 10px 0 0; padding: 12px; border-radius: 8px;
         box-shadow: 0 1px 3px rgba(0,0,0,.12); }
figure img { max-width: 100%; height: auto; display: block; margin: 0 auto; }
figcaption { color: #5a5f66; font-size: 14px; margin-bottom: 8px; }
nav a { margin-right: 12px; color: #3566a8; } .missing { color: #8a8f98; }
"""


def figure_png(fig) -> bytes:
    """The PNG bytes of a Figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=style.DPI)
    return buffer.getvalue()


def build_report(run: Run, on_plot=None) -> str:
    """The report of ``run`` as one HTML string (``run`` must carry its test set).

    ``on_plot(name, seconds)`` is called as each plot is drawn.
    """
    clf, e = run.classifier, html.escape
    meta_metrics = clf.meta.get("metrics") or {}
    config = clf.meta.get("config") or {}
    sizes = "-".join(map(str, clf.architecture["sizes"]))
    n_params = sum(p.data.size for p in clf.model.parameters())
    cm = run.confusion
    per_class = metrics.per_class_scores(cm, run.class_names)
    worst = min(range(len(per_class)), key=lambda i: per_class[i]["f1"])

    cards = [
        ("test accuracy", f"{100 * run.accuracy:.2f}%"),
        ("mistakes", f"{int(cm.sum() - cm.trace()):,} of {int(cm.sum()):,}"),
    ]
    final, epochs = meta_metrics.get("final_epoch"), meta_metrics.get("epochs")
    restored = final is not None and epochs and final != epochs
    if meta_metrics.get("val_accuracy") is not None:
        cards.append(
            (
                "validation accuracy" + (f" (epoch {final})" if restored else ""),
                f"{100 * meta_metrics['val_accuracy']:.2f}%",
            )
        )
    if epochs:
        cards.append(("epochs", f"{epochs}, weights of epoch {final}" if restored else str(epochs)))
    if meta_metrics.get("train_seconds") is not None:
        cards.append(("training time", f"{meta_metrics['train_seconds']:.1f} s"))
    cards.append(("parameters", f"{n_params:,}"))
    card_html = "".join(
        f'<div class="card"><div class="v">{e(v)}</div><div class="k">{e(k)}</div></div>' for k, v in cards
    )

    sections, nav = [], []
    for name, caption in plots.PLOTS.items():
        nav.append(f'<a href="#{name}">{name}</a>')
        reason = plots.missing(run, name)
        if reason:
            sections.append(
                f'<h2 id="{name}">{name.capitalize()}</h2><p class="missing">not available: {e(reason)}</p>'
            )
            continue
        started = time.perf_counter()
        data = base64.b64encode(figure_png(plots.make(name, run))).decode("ascii")
        if on_plot:
            on_plot(name, time.perf_counter() - started)
        sections.append(
            f'<h2 id="{name}">{name.capitalize()}</h2><figure><figcaption>{e(caption[0].upper() + caption[1:])}.'
            f'</figcaption><img alt="{name} plot" src="data:image/png;base64,{data}"></figure>'
        )

    scores = "".join(
        f"<tr{' class=worst' if c['class'] == worst else ''}><td>{e(str(c['name']))}</td><td>{c['precision']:.4f}</td>"
        f"<td>{c['recall']:.4f}</td><td>{c['f1']:.4f}</td><td>{c['support']:,}</td></tr>"
        for c in per_class
    )
    settings = "".join(f"<tr><td>{e(str(k))}</td><td>{e(_value(v))}</td></tr>" for k, v in config.items())
    title = f"{run.name}: {sizes} {clf.architecture.get('activation', '')}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title><style>{CSS}</style></head>
<body><main>
<h1>{e(title)}</h1>
<p class="sub">{e(run.dataset.name)} test set ({len(run.y_test):,} images, from {e(str(run.dataset.source))}) ·
model {e(str(clf.meta.get("path", "")))} · report by digitnet {e(__version__)}, {time.strftime("%Y-%m-%d %H:%M")}</p>
<div class="cards">{card_html}</div>
<nav><p>{" ".join(nav)}</p></nav>
<div class="tables">
<div><h2>Per-class scores</h2><table id="per-class"><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>
<th>support</th></tr>{scores}</table></div>
<div><h2>Settings</h2><table id="config"><tr><th>setting</th><th>value</th></tr>{settings}</table></div>
</div>
{"".join(sections)}
</main></body></html>
"""


def write_report(run: Run, path, on_plot=None) -> Path:
    """Write :func:`build_report` of ``run`` to ``path`` atomically and return the path."""
    path = Path(path)
    text = build_report(run, on_plot)
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DigitnetError(f"cannot write the report to {path}: {exc.strerror or exc}") from None
    return path


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v)
