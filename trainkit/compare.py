"""The model comparison of a sweep: one table, one CSV and one chart from its jobs' reports.

``python run.py -m experiment=compare`` trains every model of the zoo (or ``model=a,b``) under
the same budget on the same data; each job's :class:`callbacks.model_report.ModelReport` writes
``model_report.json`` in its run directory. When the sweep ends, :class:`CompareModels` (a Hydra
callback) gathers them into ``comparison.md``, ``comparison.csv`` and ``comparison.png`` in the
sweep directory, and logs the three to the sweep's parent MLflow run.

The source documents compare the models on four qualities; each column here is a measured
proxy (``docs/comparison.md`` explains them):

* fine-detail detection: ``detail kept``, the share of the test accuracy that survives when the
  test images are downscaled to half their side (and scaled back);
* performance: test accuracy, and training / inference images per second on this machine;
* flexibility: the input sizes the architecture trains at (its minimum and native side) and
  whether ImageNet weights can be loaded;
* compute cost: GMACs per image and inference milliseconds per image, parameters, and the
  memory training took.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("trainkit")

REPORT = "model_report.json"
COLUMNS = (
    ("model", "model", "{}"),
    ("params", "params (M)", "{:.1f}"),
    ("gmacs", "GMACs", "{:.2f}"),
    ("train_img_s", "train img/s", "{:.1f}"),
    ("infer_img_s", "infer img/s", "{:.1f}"),
    ("infer_ms_per_image", "infer ms/img", "{:.2f}"),
    ("memory_mb", "memory (MB)", "{:.0f}"),
    ("test_accuracy", "test accuracy", "{:.3f}"),
    ("half_res_accuracy", "accuracy at half resolution", "{:.3f}"),
    ("detail_kept", "fine detail: accuracy kept at half resolution", "{:.2f}"),
    ("sizes", "flexibility: input sizes", "{}"),
    ("imagenet_weights", "flexibility: ImageNet weights", "{}"),
)


def gather(sweep_dir: Path) -> list[dict[str, Any]]:
    """Every job's report under ``sweep_dir``, in job order."""
    reports = []
    for path in sorted(sweep_dir.glob(f"*/{REPORT}"), key=lambda p: _job_number(p.parent.name)):
        report = json.loads(path.read_text())
        if report.get("min_size") and report.get("native_size"):
            report["sizes"] = f">= {report['min_size']} (native {report['native_size']})"
        report["params"] = report.get("params", 0) / 1e6
        reports.append(report)
    return reports


def _job_number(name: str) -> tuple[int, str]:
    return (int(name), name) if name.isdigit() else (1 << 30, name)


def _cell(report: dict[str, Any], key: str, form: str) -> str:
    value = report.get(key)
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return form.format(value)


def write_table(reports: Sequence[dict[str, Any]], sweep_dir: Path) -> list[Path]:
    """``comparison.md``, ``comparison.csv`` and ``comparison.png`` in ``sweep_dir``."""
    markdown = sweep_dir / "comparison.md"
    lines = [
        "| " + " | ".join(title for _, title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for report in reports:
        lines.append("| " + " | ".join(_cell(report, k, f) for k, _, f in COLUMNS) + " |")
    markdown.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = sweep_dir / "comparison.csv"
    with table.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow([key for key, _, _ in COLUMNS])
        for report in reports:
            writer.writerow(["" if report.get(k) is None else report.get(k) for k, _, _ in COLUMNS])
    return [markdown, table, chart(reports, sweep_dir / "comparison.png")]


def chart(reports: Sequence[dict[str, Any]], path: Path) -> Path:
    """Test accuracy against GMACs, one marker per model, its area by parameters, as a PNG."""
    figure, _ = comparison_figure(reports)
    figure.savefig(path, dpi=100)
    return path


def comparison_figure(reports: Sequence[dict[str, Any]]) -> tuple[Any, list[Any]]:
    """The chart's matplotlib figure and its model labels (placed apart, see
    :func:`place_labels`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    points = []
    sizes = []
    for report in reports:
        x, y = report.get("gmacs") or 0.0, report.get("test_accuracy") or 0.0
        size = 20 + 4 * float(report.get("params") or 0.0)
        axes.scatter([x], [y], s=size, alpha=0.6)
        points.append((str(report.get("model")), x, y))
        sizes.append(size)
    axes.set_xscale("log")
    costs = [x for _, x, _ in points if x > 0]
    if costs:  # room on both sides for a label beside the first and the last marker
        axes.set_xlim(min(costs) / 1.6, max(costs) * 2.2)
    axes.set_ylim(min(0.0, *(y for _, _, y in points)), 1.08)  # the markers at 1.0 whole
    axes.set_xlabel("GMACs per image (log)")
    axes.set_ylabel("test accuracy")
    axes.set_title("models under one budget (marker area: parameters)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure, place_labels(axes, points, sizes)


# Where a label may go around its marker, in points, tried in this order: beside it, then
# farther up or down a line at a time, right then left.
_OFFSETS = [
    (dx, dy) for level in range(6) for dy in (4 + 10 * level, -11 - 10 * level) for dx in (5, -5)
]
_LEADER = {"arrowstyle": "-", "linewidth": 0.5, "alpha": 0.5, "shrinkA": 0, "shrinkB": 3}


def _text_box(label: Any, renderer: Any) -> Any:
    """The label's text alone (an annotation's own extent includes its leader line)."""
    from matplotlib.text import Text

    label.update_positions(renderer)  # where the text goes, as drawing would place it
    return Text.get_window_extent(label, renderer)


def place_labels(
    axes: Any, points: Sequence[tuple[str, float, float]], sizes: Sequence[float] = ()
) -> list[Any]:
    """Name each marker with the first offset (of :data:`_OFFSETS`) whose text overlaps no label
    placed before it and no other model's marker (``sizes``: their areas in points squared),
    and stays inside the axes (else the first inside the axes); models with the same cost and
    accuracy (the chance-level ones) would otherwise print over each other. Labels are placed
    from the top down; one moved away from its marker has a thin line to it."""
    from matplotlib.transforms import Bbox

    renderer = axes.figure.canvas.get_renderer()
    inside = axes.get_window_extent(renderer)
    pixels = axes.figure.dpi / 72
    markers = {}
    for (name, x, y), size in zip(points, sizes, strict=False):
        cx, cy = axes.transData.transform((x, y))
        r = size**0.5 / 2 * pixels
        markers[name] = Bbox.from_extents(cx - r, cy - r, cx + r, cy + r)
    placed: list[Any] = []
    for name, x, y in sorted(points, key=lambda p: (-p[2], p[1])):
        others = [box for other, box in markers.items() if other != name]
        chosen = None
        for dx, dy in _OFFSETS:
            label = axes.annotate(
                name,
                (x, y),
                fontsize=8,
                xytext=(dx, dy),
                textcoords="offset points",
                ha="left" if dx > 0 else "right",
                arrowprops=None if (dx, dy) == _OFFSETS[0] else _LEADER,
            )
            box = _text_box(label, renderer)
            fits = inside.x0 <= box.x0 and box.x1 <= inside.x1
            fits = fits and inside.y0 <= box.y0 and box.y1 <= inside.y1
            clear = not any(box.overlaps(_text_box(other, renderer)) for other in placed)
            clear = clear and not any(box.overlaps(marker) for marker in others)
            if fits and clear:
                if chosen is not None:
                    chosen.remove()
                chosen = label
                break
            if fits and chosen is None:
                chosen = label  # kept unless a clear place turns up
            else:
                label.remove()
        if chosen is None:  # nowhere inside the axes: beside the marker all the same
            chosen = axes.annotate(
                name, (x, y), fontsize=8, xytext=_OFFSETS[0], textcoords="offset points"
            )
        placed.append(chosen)
    return placed


def log_to_parent_run(sweep_dir: Path, uri: str, paths: Sequence[Path]) -> str | None:
    """Log the comparison files to the sweep's parent MLflow run; its id, or None."""
    from mlflow import MlflowClient

    from trainkit.tracking.files import PARENT_RUN_ID_FILE

    marker = sweep_dir / PARENT_RUN_ID_FILE
    if not marker.exists():
        return None
    run_id = marker.read_text().strip()
    client = MlflowClient(uri)
    for path in paths:
        client.log_artifact(run_id, str(path), "comparison")
    return run_id


class CompareModels(Callback):
    """Hydra callback: at the end of a multirun, compare the models its jobs trained."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from trainkit.job import tracking_settings

        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        reports = gather(sweep_dir)
        if not reports:
            log.warning("compare: no %s under %s: nothing to compare", REPORT, sweep_dir)
            return
        paths = write_table(reports, sweep_dir)
        print(f"comparison of {len(reports)} models: {paths[0]}", flush=True)
        try:
            uri = tracking_settings(config)["uri"]
            if log_to_parent_run(sweep_dir, uri, paths):
                print("comparison logged to the sweep's MLflow parent run", flush=True)
        except Exception as exc:  # the files are written; the store is a copy
            log.warning("compare: logging to MLflow failed: %s: %s", type(exc).__name__, exc)
