"""Evaluator models: a missing one is an error saying how to get it; the shipped small ones (the run_dir of
experiments/configs/evaluators_synthetic.yaml, which `make evaluators` rebuilds elsewhere) on fresh synthetic
faces."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchmetrics.multimodal.clip_score import CLIPScore

from data_modules.dataset import load_faces
from data_modules.layouts import scan
from data_modules.synthetic import write_synthetic
from experiments.config.load import load_config
from experiments.config.schema import EvaluatorsConfig
from facemogle.evaluators import EvaluatorConfig, load_clip, load_face_parser, load_inception
from facemogle.metrics import MaskConsistency, build_generation_metrics

TRAINED = Path(load_config("experiments/configs/evaluators_synthetic.yaml", schema=EvaluatorsConfig).run_dir)
needs_trained = pytest.mark.skipif(
    not (TRAINED / "clip" / "config.json").is_file(), reason=f"run `make evaluators` first (writes {TRAINED})"
)


def test_evaluator_paths_default_to_none_so_nothing_is_read_from_the_working_directory():
    config = EvaluatorConfig()
    assert config.clip_path is None and config.parser_path is None and config.inception_path is None


def test_a_missing_model_is_an_error_naming_the_path_and_how_to_get_it(tmp_path):
    with pytest.raises(
        ValueError, match=r"nowhere: no CLIP model here \(does not exist.*make evaluators.*openai"
    ):
        load_clip(tmp_path / "nowhere")
    with pytest.raises(
        ValueError,
        match=r"no face parser path given; the repository ships .*`make evaluators` rebuilds.*SegFormer",
    ):
        load_face_parser(None)
    with pytest.raises(ValueError, match=r"has no config.json.*make evaluators"):
        load_face_parser(tmp_path)
    with pytest.raises(ValueError, match=r"Inception weights not found at .*x.pth: download pt_inception"):
        load_inception(tmp_path / "x.pth")
    with pytest.raises(ValueError, match=r"features 'inception' need the Inception weights file: download"):
        load_inception(None)


def test_clip_features_without_a_clip_path_name_the_key_to_set():
    with pytest.raises(
        ValueError, match=r"evaluators.features='clip' needs a CLIP model \(evaluators.clip_path"
    ):
        build_generation_metrics(EvaluatorConfig())


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = write_synthetic(tmp_path_factory.mktemp("faces"), n=24, size=64, seed=12345)  # unseen faces
    return load_faces(scan(root).records, 64)


@needs_trained
def test_trained_clip_scores_a_matching_caption_above_a_mismatching_one(faces):
    images, captions = (faces.images * 255).round().to(torch.uint8), faces.captions
    clip = load_clip(TRAINED / "clip")
    matching, mismatching = (CLIPScore(model_name_or_path=clip.clip_score_factory()) for _ in range(2))
    matching.update(images, captions)
    mismatching.update(images, captions[1:] + captions[:1])
    assert matching.compute() > mismatching.compute()


@needs_trained
def test_trained_parser_reads_unseen_faces(faces):
    parser = load_face_parser(TRAINED / "parser")
    metric = MaskConsistency()
    metric.update(parser.parse(faces.images), faces.labels)
    assert metric.compute()["miou"] > 0.8  # docs/evaluation.md's tuning log has the figure on the test split
