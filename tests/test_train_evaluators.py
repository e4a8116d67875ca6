"""The evaluators' training: its losses, data stream, metrics, config and the whole command on tiny models."""

from __future__ import annotations

import csv
import json
import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from data_modules.evaluator_data import (
    EvaluatorDataConfig,
    EvaluatorDataModule,
    SplitFaces,
    TrainBatches,
    gaussian_blur,
)
from data_modules.synthetic import write_synthetic
from experiments import train_evaluators
from experiments.config.load import load_config
from experiments.config.schema import EvaluatorsConfig
from facemogle.evaluators import SmallParserConfig, build_small_parser, load_clip, load_face_parser
from facemogle.evaluators.lit_modules import (
    ClipModule,
    FaceParserModule,
    ParserTrainConfig,
    class_weights,
    dice_loss,
    warmup_cosine,
)
from facemogle.face_parts import PARTS
from facemogle.metrics.retrieval import CaptionRetrieval
from tests.test_eval_metrics import tiny_clip

TINY_PARSER = SmallParserConfig(
    image_size=32, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1]
)
TINY_MODELS = [
    *(
        "parser.model.image_size=32",
        "parser.model.hidden_sizes=[8,16,16,16]",
        "parser.model.depths=[1,1,1,1]",
    ),
    *("parser.model.num_attention_heads=[1,1,1,1]", "parser.model.decoder_hidden_size=16"),
    *("clip.model.image_size=32", "clip.model.hidden_size=16", "clip.model.layers=1", "clip.model.heads=1"),
    "clip.model.projection_dim=8",
]


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    root = write_synthetic(tmp_path_factory.mktemp("faces"), n=30, size=32, seed=0)
    return root, SplitFaces.load(EvaluatorDataConfig(root=str(root), resolution=32))


def _confident(labels: torch.Tensor, classes: int = 19) -> torch.Tensor:
    return 50.0 * F.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def test_dice_is_zero_for_a_confident_correct_parse_and_one_per_missed_class():
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, 4:8, 4:8] = 4  # an eye on skin-free background
    assert dice_loss(_confident(labels), labels) < 1e-3
    missed = labels.clone()
    missed[:, 4:8, 4:8] = 0  # the parse misses the eye: 1 of the 2 present classes scores ~0
    loss = dice_loss(_confident(missed), labels)
    assert 0.45 < loss < 0.55


def test_a_missed_four_pixel_part_costs_nearly_as_much_as_a_missed_half_image():
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[:, :16] = 1
    labels[:, 20:22, 20:22] = 15  # a 4-pixel earring, 0.4 % of the pixels
    small, large = labels.clone(), labels.clone()
    small[small == 15] = 0
    large[large == 1] = 0
    missed_small, missed_large = (dice_loss(_confident(p), labels).item() for p in (small, large))
    # 3 classes present. Missing the earring: background ~0, class 1 0, earring 1 - 1/5 (the +1 smoothing).
    # Missing class 1 (half the image): background 1 - 1017/1529, class 1 ~1, earring 0.
    assert abs(missed_small - (1 - 1017 / 1021 + 0.8) / 3) < 1e-3
    assert abs(missed_large - (1 - 1017 / 1529 + 1 - 1 / 513) / 3) < 1e-3
    assert missed_small > 0.6 * missed_large


def test_a_class_only_in_the_prediction_counts():
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    stray = labels.clone()
    stray[:, :3, :3] = 15  # 9 pixels of earring that is not there
    assert dice_loss(_confident(labels), labels) < 1e-3
    assert dice_loss(_confident(stray), labels) > 0.45  # background ~0.03, earring 1, averaged over 2


def test_class_weights_go_with_the_inverse_square_root_of_a_part_s_pixel_share():
    labels = torch.zeros(4, 16, 16, dtype=torch.long)
    labels[:, :4] = 1  # 1/4 of the pixels
    labels[:, 0, :4] = 4  # 1/64
    weights = class_weights(labels)
    assert weights[4] > weights[1] > weights[0]
    assert weights[4] / weights[1] == pytest.approx((60 / 4) ** 0.5, rel=1e-5)
    assert weights[1] / weights[0] == pytest.approx((192 / 60) ** 0.5, rel=1e-5)


def test_gaussian_blur_keeps_sigma_zero_images_and_the_mean_and_softens_an_edge():
    images = torch.zeros(2, 3, 9, 9)
    images[:, :, :, 5:] = 1.0  # a vertical edge
    out = gaussian_blur(images, torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[0], images[0], atol=1e-6)
    row = out[1, 0, 4]
    assert 0 < row[4] < 0.5 < row[5] < 1 and torch.all(row[1:] >= row[:-1])  # monotone, softened
    assert torch.allclose(out[1].mean((1, 2)), images[1].mean((1, 2)), atol=0.02)  # replicated edges


def test_the_lr_warms_up_over_a_twentieth_of_the_steps_then_decays_to_zero():
    factor = warmup_cosine(100)
    assert factor(0) == pytest.approx(0.2)  # the first of 5 warm-up steps
    assert factor(4) == pytest.approx(0.5 * (1 + math.cos(0.04 * math.pi)))  # warm, and the cosine's
    assert factor(50) == pytest.approx(0.5) and factor(100) == 0.0
    with pytest.raises(ValueError, match="trainer.max_steps"):
        warmup_cosine(-1)


def test_training_batches_are_a_function_of_the_seed(faces):
    _, split = faces
    first = next(iter(TrainBatches(split.train, 4, max_blur=1.2, seed=3)))
    again = next(iter(TrainBatches(split.train, 4, max_blur=1.2, seed=3)))
    other = next(iter(TrainBatches(split.train, 4, max_blur=1.2, seed=4)))
    assert torch.equal(first["image"], again["image"]) and not torch.equal(first["image"], other["image"])
    assert first["image"].shape == (4, 3, 32, 32) and 0 <= first["image"].min() <= first["image"].max() <= 1
    assert "caption" not in first


def test_contrastive_batches_hold_distinct_faces_each_with_one_of_its_captions(faces):
    _, split = faces
    n = len(split.train)
    batch = next(iter(TrainBatches(split.train, n, max_blur=0.0, seed=0, contrastive=True)))
    own = {
        tuple(labels.flatten().tolist()): caps
        for labels, caps in zip(split.train.labels, split.train.all_captions, strict=True)
    }
    assert len(own) == n  # the synthetic faces' label maps tell them apart
    seen = [tuple(labels.flatten().tolist()) for labels in batch["labels"]]
    assert len(set(seen)) == n
    assert seen and all(caption in own[key] for key, caption in zip(seen, batch["caption"], strict=True))
    with pytest.raises(ValueError, match="training faces"):
        TrainBatches(split.train, n + 1, max_blur=0.0, seed=0, contrastive=True)


def test_lightning_trains_the_parser_exactly_as_a_plain_loop_would(faces):
    """Same seed, same batches: Lightning's loop (its scheduler stepping, its data loader) changes no loss."""
    _, split = faces
    steps, config = 4, ParserTrainConfig()
    weights = class_weights(split.train.labels)

    torch.manual_seed(0)
    parser = build_small_parser(TINY_PARSER, seed=0).train()
    optimizer = torch.optim.AdamW(parser.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps))
    stream = iter(TrainBatches(split.train, 4, max_blur=1.2, seed=0))
    expected = []
    for _ in range(steps):
        batch = next(stream)
        logits = parser(batch["image"])
        loss = F.cross_entropy(logits, batch["labels"], weight=weights) + dice_loss(logits, batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        expected.append(loss.detach())

    class Record(L.Callback):
        losses: list[torch.Tensor] = []

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses.append(outputs["loss"].detach())

    torch.manual_seed(0)
    module = FaceParserModule(build_small_parser(TINY_PARSER, seed=0), weights, config)
    data = EvaluatorDataModule(split, batch_size=4, max_blur=1.2, seed=0)
    record = Record()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[record],
    )
    trainer.fit(module, datamodule=data)
    assert torch.equal(torch.stack(record.losses), torch.stack(expected))
    for mine, theirs in zip(module.parser.parameters(), parser.parameters(), strict=True):
        assert torch.equal(mine, theirs)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # a step outside a Trainer
def test_clip_module_loss_is_the_symmetric_contrastive_loss_of_its_scaled_cosines_capped_at_100(faces):
    _, split = faces
    clip = tiny_clip()
    module = ClipModule(clip)
    batch = next(iter(TrainBatches(split.train, 6, max_blur=0.0, seed=0, contrastive=True)))
    image = F.normalize(clip(batch["image"]), dim=-1)
    text = F.normalize(clip.text_embeddings(batch["caption"]), dim=-1)
    logits = clip.model.logit_scale.exp() * image @ text.T  # (b, b)
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    torch.testing.assert_close(module.training_step(batch, 0), expected, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        clip.model.logit_scale.fill_(10.0)
    module.on_train_batch_end(None, batch, 0)
    assert clip.model.logit_scale.exp().item() == pytest.approx(100.0)  # CLIP's cap on the scale


def test_caption_retrieval_counts_ranks_as_by_hand():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(250, 8, generator=g), torch.randn(250, 8, generator=g)
    text[:150] += 2 * image[:150]  # some images find their captions
    text[[11, 130]] = text[[10, 131]]  # two faces described alike: a tie, and no miss, for either
    metric = CaptionRetrieval(top_k=(1, 5), group_size=100, seed=7)
    metric.update(image[:120], text[:120])
    metric.update(image[120:], text[120:])
    scores = metric.compute()
    sim = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    ranks = torch.cat(
        [
            (sim[s : s + 100, s : s + 100] > sim[s : s + 100, s : s + 100].diagonal()[:, None]).sum(1)
            for s in (0, 100)
        ]
    )  # captions scoring above the right one, in each of the 2 whole groups
    assert scores["retrieval_groups"] == 2
    assert scores["recall_at_1_of_100"] == pytest.approx((ranks < 1).float().mean().item())
    assert scores["recall_at_5_of_100"] == pytest.approx((ranks < 5).float().mean().item())
    other = (
        torch.arange(250) + torch.randint(1, 250, (250,), generator=torch.Generator().manual_seed(7))
    ) % 250
    pairwise = (sim.diagonal() > sim[torch.arange(250), other]).float().mean()
    assert scores["pairwise_accuracy"] == pytest.approx(pairwise.item())
    assert 0.5 < scores["pairwise_accuracy"] < 1 and 0 < scores["recall_at_1_of_100"] < 1


def test_the_evaluators_config_file_loads_and_an_unknown_key_names_the_valid_ones():
    config = load_config(
        "experiments/configs/evaluators_synthetic.yaml", ["parser.steps=7"], EvaluatorsConfig
    )
    assert config.parser.steps == 7 and config.clip.steps == 400 and config.data.split.protocol == "fraction"
    with pytest.raises(
        ValueError, match=r"unknown config key 'parser.stepz'; valid keys: batch_size, max_blur"
    ):
        load_config(overrides=["parser.stepz=3"], schema=EvaluatorsConfig)
    with pytest.raises(ValueError, match=r"clip.steps=0 \(from the command line\) must be >= 1"):
        load_config(overrides=["clip.steps=0"], schema=EvaluatorsConfig)
    with pytest.raises(ValueError, match=r"parser.train.lr=-0.1 \(from the command line\) must be > 0"):
        load_config(overrides=["parser.train.lr=-0.1"], schema=EvaluatorsConfig)


@pytest.mark.parametrize("logger", ["csv", "wandb"])
def test_train_evaluators_saves_both_models_their_report_checkpoints_and_logs(
    faces, tmp_path, logger, monkeypatch
):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    root, _ = faces
    run = tmp_path / "evaluators"
    report = train_evaluators.main(
        [
            *("--config", "experiments/configs/evaluators_synthetic.yaml"),
            *(f"run_dir={run}", f"data.root={root}", "data.resolution=32", f"logger.kind={logger}"),
            *("parser.steps=3", "parser.batch_size=4", "clip.steps=2", "clip.batch_size=8"),
            *("trainer.log_every_n_steps=1", "trainer.progress_bar=false", *TINY_MODELS),
        ]
    )
    assert (run / "report.json").read_text() == json.dumps(report, indent=2)  # NaN: classes never seen
    assert set(report) == {"data", "config", "train_faces", "test_faces", "parser", "clip", "seconds"}
    assert (report["train_faces"], report["test_faces"]) == (26, 3)  # of 30: 1 validation face, unused
    assert report["config"]["parser"]["steps"] == 3
    assert 0 <= report["parser"]["miou"] <= 1 and set(report["parser"]["per_class_iou"]) == set(PARTS)
    assert 0 <= report["clip"]["pairwise_accuracy"] <= 1 and report["clip"]["retrieval_groups"] == 0
    images = torch.rand(2, 3, 32, 32)
    assert load_face_parser(run / "parser").parse(images).shape == (2, 32, 32)
    assert load_clip(run / "clip")(images).shape == (2, 8)
    for stage, steps in (("parser", 3), ("clip", 2)):
        assert (
            torch.load(run / "checkpoints" / stage / "last.ckpt", weights_only=False)["global_step"] == steps
        )
    if logger == "csv":  # a file per model: each one's steps count from 0
        for stage, steps, score in (("parser", 3, "miou"), ("clip", 2, "pairwise_accuracy")):
            (metrics,) = (run / "logs" / stage).rglob("metrics.csv")
            rows = list(csv.DictReader(metrics.open()))
            assert sum(bool(r.get(f"{stage}/train/loss")) for r in rows) == steps
            assert any(r.get(f"{stage}/lr") for r in rows) and any(
                r.get(f"{stage}/test/{score}") for r in rows
            )
    else:
        (offline,) = (run / "wandb").glob("offline-run-*")
        assert list(offline.glob("run-*.wandb"))  # the metric history
