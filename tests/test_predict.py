"""The predict task: images in, top-k classes per image out (table, rows and CSV)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from trainkit.errors import DataNotFoundError, WeightsNotAvailableError
from trainkit.models import build_model
from trainkit.topk import predict_images, run_predict_task, write_predictions_csv

CLASS_NAMES = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run as the job leaves it: class_names.json, and a checkpoint one folder down."""
    keras.backend.clear_session()
    root = tmp_path_factory.mktemp("run")
    (root / "class_names.json").write_text(json.dumps(CLASS_NAMES))
    model = build_model("inception_v1", 3, input_shape=40)  # aux heads: a custom .keras model
    # Compiled, untrained: what the tests read is the file's model and the images' rows, not
    # what the weights learnt (training GoogLeNet a step, eagerly, took a third of the module).
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    (root / "checkpoints").mkdir()
    model.save(root / "checkpoints" / "best.keras")
    return root


@pytest.fixture
def image_dir(tmp_path) -> Path:
    folder = tmp_path / "images"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(1)
    # RGB, grayscale and RGBA files of several sizes: all are read as RGB at the model's size.
    for index, shape in enumerate([(30, 50, 3), (40, 40), (80, 64, 4)]):
        pixels = rng.integers(0, 255, shape, dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"image{index}.png")
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(
        folder / "nested" / "deep.PNG"
    )
    (folder / "notes.txt").write_text("not an image")
    return folder


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_predict_task_writes_top_k_rows_per_image(run_dir, image_dir, tmp_path, capsys):
    output = tmp_path / "out" / "predictions.csv"
    rows = run_predict_task(run_dir / "checkpoints" / "best.keras", image_dir, output, top_k=2)
    assert len(rows) == 4 and all(len(row["predictions"]) == 2 for row in rows)
    lines = read_csv(output)
    assert list(lines[0]) == ["image", "rank", "class_index", "class_name", "probability"]
    assert len(lines) == 4 * 2
    by_image: dict[str, list[dict]] = {}
    for line in lines:
        by_image.setdefault(line["image"], []).append(line)
    assert {Path(image).name for image in by_image} == {
        "image0.png",
        "image1.png",
        "image2.png",
        "deep.PNG",
    }
    for predictions in by_image.values():
        assert [int(p["rank"]) for p in predictions] == [1, 2]
        probabilities = [float(p["probability"]) for p in predictions]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-6
        for p in predictions:
            assert p["class_name"] == CLASS_NAMES[int(p["class_index"])]
    out = capsys.readouterr().out
    assert "Top-k predictions" in out and "deep.PNG" in out


@pytest.mark.slow
def test_one_image_and_k_capped_at_the_number_of_classes(run_dir, image_dir, tmp_path):
    rows = run_predict_task(
        run_dir / "checkpoints" / "best.keras", image_dir / "image1.png", tmp_path / "p.csv", 10
    )
    assert len(rows) == 1 and len(rows[0]["predictions"]) == 3
    probabilities = [p["probability"] for p in rows[0]["predictions"]]
    assert sum(probabilities) == pytest.approx(1.0, rel=1e-5)
    assert len(read_csv(tmp_path / "p.csv")) == 3


@pytest.mark.slow
def test_bad_paths_are_one_line_errors(run_dir, image_dir, tmp_path):
    checkpoint = run_dir / "checkpoints" / "best.keras"
    (tmp_path / "empty").mkdir()
    (tmp_path / "model.h5").write_text("")
    (tmp_path / "broken.keras").write_text("not a zip file")
    cases = [
        (tmp_path / "missing.keras", image_dir, WeightsNotAvailableError, "no such file"),
        (tmp_path / "model.h5", image_dir, WeightsNotAvailableError, "expected a .keras"),
        (tmp_path / "broken.keras", image_dir, WeightsNotAvailableError, "cannot load"),
        (checkpoint, tmp_path / "nowhere", DataNotFoundError, "no such image file or folder"),
        (checkpoint, tmp_path / "empty", DataNotFoundError, "no images"),
    ]
    for ckpt, inputs, error_type, words in cases:
        with pytest.raises(error_type) as error:
            run_predict_task(ckpt, inputs, tmp_path / "out.csv")
        assert words in str(error.value) and "\n" not in str(error.value)


def imagenet_sized_model() -> keras.Model:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    return keras.Model(inputs, keras.layers.Dense(1000, activation="softmax")(x))


def test_imagenet_head_names_offline_and_from_the_cache(image_dir, tmp_path, monkeypatch):
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    monkeypatch.setenv("KERAS_HOME", str(home))
    model = imagenet_sized_model()
    rows = predict_images(model, image_dir / "image0.png", top_k=3)
    assert all(p["class_name"].startswith("class_") for p in rows[0]["predictions"])
    index = {str(i): [f"n{i:08d}", f"synset_{i}"] for i in range(1000)}
    (home / "models" / "imagenet_class_index.json").write_text(json.dumps(index))
    rows = predict_images(model, image_dir / "image0.png", top_k=3)
    for p in rows[0]["predictions"]:
        assert p["class_name"] == f"synset_{p['class_index']}"


def test_write_predictions_csv(tmp_path):
    rows = [
        {
            "image": "a.png",
            "predictions": [
                {"rank": 1, "class_index": 2, "class_name": "x", "probability": 0.75},
            ],
        }
    ]
    write_predictions_csv(rows, tmp_path / "deep" / "p.csv")
    assert read_csv(tmp_path / "deep" / "p.csv") == [
        {
            "image": "a.png",
            "rank": "1",
            "class_index": "2",
            "class_name": "x",
            "probability": "0.75",
        }
    ]
