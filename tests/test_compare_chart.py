"""The comparison chart (trainkit/compare.py): every model's label readable beside its marker."""

from __future__ import annotations

from trainkit.compare import _text_box, comparison_figure


def test_labels_of_models_at_the_same_point_do_not_overlap():
    # The 14-model run's shape: five models at chance with the same cost, four CLIPs side by side.
    reports = [
        {"model": f"chance_{i}", "gmacs": 0.45 + 0.01 * i, "test_accuracy": 0.1, "params": 25}
        for i in range(5)
    ] + [
        {"model": f"clip_{i}", "gmacs": g, "test_accuracy": 0.96, "params": p}
        for i, (g, p) in enumerate([(0.6, 39), (0.9, 57), (1.2, 88), (2.3, 168)])
    ]
    figure, labels = comparison_figure(reports)
    renderer = figure.canvas.get_renderer()
    assert sorted(label.get_text() for label in labels) == sorted(r["model"] for r in reports)
    inside = figure.axes[0].get_window_extent(renderer)
    boxes = [_text_box(label, renderer) for label in labels]
    for i, box in enumerate(boxes):
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, labels[i].get_text()
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, labels[i].get_text()
        for j in range(i):
            assert not box.overlaps(boxes[j]), (labels[i].get_text(), labels[j].get_text())
    # The accuracy axis shows a marker at 1.0 whole.
    assert figure.axes[0].get_ylim()[1] > 1.0
