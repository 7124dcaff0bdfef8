"""The Ray Data vision batch job: a folder of images through an actor pool of the real (tiny) OWL-ViT, to Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from almquist.config import DetectionConfig
from almquist.images import decode_image
from deployments.detection import OwlViTEngine
from ingestion.__main__ import main as ingestion_main
from ingestion.images import run
from tests import tiny_vision

QUERIES = ["a cat", "a dog"]


def write_images(folder) -> list[str]:
    rng = np.random.default_rng(1)
    names = []
    for i, size in enumerate([(64, 64), (80, 48), (40, 72)]):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        name = folder / f"photo{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(name)
        names.append(str(name))
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    (folder / "notes.txt").write_text("not an image, and not picked up")
    return names


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> DetectionConfig:
    model = tiny_vision.save_tiny_owlvit(tmp_path_factory.mktemp("owlvit"))
    return DetectionConfig(model=model, score_threshold=0.3)


def test_detect_and_embed_a_folder_to_parquet(local_ray, config, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    names = write_images(folder)
    report = run(folder, tmp_path / "out", config, QUERIES, actors=2, batch_size=2, num_cpus=0.5)
    assert (report.images, report.failed) == (4, 1)
    table = pd.read_parquet(tmp_path / "out").set_index("path")
    assert "broken.png" in table.index[table["error"] != ""][0]
    assert "not a readable image" in table.loc[table.index[table["error"] != ""][0], "error"]

    # Every good row equals the engine called directly on the same file.
    engine = OwlViTEngine(config)
    for name in names:
        row = table.loc[name]
        with open(name, "rb") as file:
            image = decode_image(file.read())
        [expected] = engine.detect_batch([image], [QUERIES], [config.score_threshold])
        assert (row["width"], row["height"]) == image.size and row["error"] == ""
        assert list(row["labels"]) == [d.label for d in expected]
        np.testing.assert_allclose(list(row["scores"]), [d.score for d in expected], atol=1e-4)
        np.testing.assert_allclose(
            np.array([list(b) for b in row["boxes"]]).reshape(-1, 4),
            np.array([d.box for d in expected]).reshape(-1, 4),
            atol=1e-2,
        )
        vector = np.array(row["embedding"], dtype=np.float32)
        assert abs(np.linalg.norm(vector) - 1) < 1e-4
        np.testing.assert_allclose(vector, engine.image_embeddings([image])[0], atol=1e-4)
    assert report.detections == sum(len(table.loc[n, "labels"]) for n in names) > 0


def test_command_line_reports_and_refuses_an_empty_folder(config, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code = ingestion_main(["images", str(empty), "--model", config.model, "--out", str(tmp_path / "o")])
    assert code == 2 and "no images" in capsys.readouterr().err
