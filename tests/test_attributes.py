"""Attribute accuracy (hair colour, lipstick) measured from a face's colours: near-perfect on real synthetic
faces, chance on the same faces shuffled against their attributes; with the trained evaluator parser
(`make evaluators`) as with the true label maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_modules.attributes import attribute_targets
from data_modules.datamodule import DataConfig
from data_modules.split import SplitConfig
from data_modules.synthetic import draw_face, write_synthetic
from experiments.ablation.attributes import AttributeScorer
from experiments.evaluation.run import split_faces
from facemogle.metrics.attributes import FEATURES, NearestMean, accuracy
from tests.test_eval_evaluators import TRAINED, needs_trained


def test_accuracy_counts_a_missing_prediction_as_wrong_and_chance_is_the_expected_shuffled_score():
    score = accuracy(["a", "a", None, "b"], ["a", "b", "a", None])
    assert (score.accuracy, score.n) == (1 / 3, 3)
    # targets a, b, a; predictions a, a, None: P(target a) P(pred a) + P(target b) P(pred b) = 2/3 * 2/3
    assert score.chance == pytest.approx(4 / 9)


def synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, list[dict]]:
    faces = [draw_face(np.random.default_rng([seed, i]), 64) for i in range(n)]
    images = torch.from_numpy(np.stack([f.image for f in faces])).permute(0, 3, 1, 2).float() / 255
    labels = torch.from_numpy(np.stack([f.labels for f in faces])).long()
    return images, labels, [attribute_targets(vars(f.attributes)) for f in faces]


def test_colour_features_name_the_hair_colour_and_lipstick_of_real_faces_and_chance_when_shuffled():
    images, labels, targets = synthetic(240, seed=31)  # the true label maps stand in for the parser
    fit, test = slice(0, 160), slice(160, 240)
    shuffled = np.random.default_rng(0).permutation(80)
    for name, minimum in (("hair_color", 0.9), ("lipstick", 0.8)):
        values = FEATURES[name](images, labels)
        classifier = NearestMean.fit(values[fit], [t[name] for t in targets[fit]])
        predicted = classifier.predict(values[test])
        truth = [t[name] for t in targets[test]]
        real = accuracy(predicted, truth)
        assert real.accuracy >= minimum, (name, real)
        permuted = accuracy([predicted[i] for i in shuffled], truth)
        assert abs(permuted.accuracy - permuted.chance) < 0.15 and permuted.accuracy < real.accuracy - 0.3


@needs_trained
def test_the_trained_parser_scores_real_faces_near_perfectly_and_shuffled_ones_at_chance(tmp_path):
    root = write_synthetic(tmp_path / "faces", n=300, size=64, seed=4242)  # faces the parser never saw
    data = DataConfig(root=str(root), split=SplitConfig(protocol="fraction", test_fraction=0.3))
    scorer = AttributeScorer.build(str(TRAINED / "parser"), data)
    records, faces = split_faces(data, "test", None)
    keys = [r.key for r in records]
    real = scorer.score(faces.images, keys)
    assert real["hair_color"]["accuracy"] >= 0.9 and real["lipstick"]["accuracy"] >= 0.8, real
    shuffled = scorer.score(
        faces.images[torch.randperm(len(keys), generator=torch.Generator().manual_seed(0))], keys
    )
    for name, score in shuffled.items():
        assert abs(score["accuracy"] - score["chance"]) < 0.15, (name, score)
