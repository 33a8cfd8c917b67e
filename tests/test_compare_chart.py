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


def test_no_label_covers_another_models_marker():
    """The session-13 sweep's crowded corner: seven models between 0.4 and 2.4 GMACs at
    0.89-0.98, the largest marker at the right edge."""
    crowd = [
        ("inception_resnet_v2", 0.43, 0.970, 54.3),
        ("clip_resnet50", 0.57, 0.948, 38.3),
        ("resnet50_v2", 0.48, 0.907, 23.5),
        ("clip_resnet101", 0.87, 0.959, 56.3),
        ("clip_resnet50x4", 1.19, 0.956, 87.1),
        ("vgg16", 1.61, 0.889, 39.9),
        ("clip_resnet50x16", 2.33, 0.978, 167.3),
        ("alexnet", 0.10, 0.830, 21.6),
    ]
    reports = [{"model": m, "gmacs": g, "test_accuracy": a, "params": p} for m, g, a, p in crowd]
    figure, labels = comparison_figure(reports)
    renderer = figure.canvas.get_renderer()
    axes = figure.axes[0]
    pixels = figure.dpi / 72
    for label in labels:
        box = _text_box(label, renderer)
        assert axes.get_window_extent(renderer).contains(box.x1, box.y1), label.get_text()
        for model, gmacs, accuracy, params in crowd:
            if model == label.get_text():
                continue
            x, y = axes.transData.transform((gmacs, accuracy))
            r = (20 + 4 * params) ** 0.5 / 2 * pixels
            covered = box.x0 < x + r and x - r < box.x1 and box.y0 < y + r and y - r < box.y1
            assert not covered, (label.get_text(), model)
