"""Attribute accuracy of generated faces: the evaluator parser finds the regions, and the classifiers of
facemogle.metrics.attributes, fit once on the data set's real training faces, name each face's hair colour
and lipstick; the targets are the synthetic set's attributes.json.

    scorer = AttributeScorer.build(parser_path, config.data)   # or scorer_for(...): None without attributes
    scorer.score(images, keys)   # {"hair_color": {"accuracy", "n", "chance"}, "lipstick": {...}}
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from data_modules.attributes import ATTRIBUTES_FILE, attribute_targets, read_attributes
from data_modules.datamodule import DataConfig
from experiments.evaluation.run import split_faces
from facemogle.evaluators import FaceParser, load_face_parser
from facemogle.metrics.attributes import FEATURES, NearestMean, accuracy

FIT_FACES = 600  # real training faces the class means are fit on
BATCH = 32


def scorer_for(
    parser_path: str | None, data: DataConfig, label_order: str | None = None
) -> AttributeScorer | None:
    """The scorer of a data set with attributes.json (the synthetic set) and a parser; None otherwise."""
    if parser_path is None or not (Path(data.root) / ATTRIBUTES_FILE).is_file():
        return None
    return AttributeScorer.build(parser_path, data, label_order)


@dataclass
class AttributeScorer:
    parser: FaceParser
    classifiers: dict[str, NearestMean]
    targets: dict[str, dict[str, str | None]]  # face id -> attribute -> target

    @classmethod
    def build(
        cls, parser_path: str, data: DataConfig, label_order: str | None = None, fit_faces: int = FIT_FACES
    ) -> AttributeScorer:
        parser = load_face_parser(parser_path, label_order).eval()
        targets = {key: attribute_targets(a) for key, a in read_attributes(data.root).items()}
        records, faces = split_faces(data, "train", fit_faces)
        scorer = cls(parser, {}, targets)
        features = scorer.features(faces.images)
        for name, values in features.items():
            scorer.classifiers[name] = NearestMean.fit(values, [scorer.target(r.key, name) for r in records])
        return scorer

    def target(self, key: str, name: str) -> str | None:
        if key not in self.targets:
            raise ValueError(f"face {key} has no entry in the data set's attributes.json")
        return self.targets[key][name]

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (b, 3, H, W) in [0, 1] -> each attribute's features (b, f)."""
        parser = self.parser.to(images.device)
        parse = torch.cat([parser.parse(images[s : s + BATCH]) for s in range(0, len(images), BATCH)])
        return {name: feature(images, parse) for name, feature in FEATURES.items()}

    def score(self, images: torch.Tensor, keys: list[str]) -> dict[str, dict]:
        """Accuracy of each attribute on the faces `keys` (their ids in attributes.json)."""
        scores = {}
        for name, values in self.features(images).items():
            predicted = self.classifiers[name].predict(values)
            scores[name] = accuracy(predicted, [self.target(k, name) for k in keys]).as_dict()
        return scores
