"""The generation-metrics callback in a tiny CPU Trainer run, with a fake generating LightningModule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger

from callbacks import GenerationEvalConfig, GenerationEvaluator
from callbacks.generation_eval import share
from callbacks.visuals import gate_map, sample_grid
from facemogle.faces import Faces
from facemogle.gate_analysis import region_gate_weights
from facemogle.metrics import GenerationMetrics
from facemogle.sampling import SampleOutput
from tests.test_eval_metrics import PaletteParser, palette_images, random_labels, tiny_clip

N, SIZE, EXPERTS, STEPS = 10, 32, 20, 3


def make_subset() -> Faces:
    labels = random_labels(N, SIZE)
    return Faces(palette_images(labels), labels, [f"face number {i}" for i in range(N)])


class PerfectGenerator(L.LightningModule):
    """Returns the subset's real image of item seed + i, so every metric is perfect when the callback
    keeps seeds, masks and captions of each item together; records what it was asked."""

    def __init__(self, subset: Faces, text_only_condition: str = "background"):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.subset = subset
        self.text_only_condition = text_only_condition
        self.calls: list[tuple[bool, bool, int, int]] = []

    def generate(self, prompts, masks, seed):
        n = len(prompts) if prompts is not None else masks.shape[0]
        self.calls.append((prompts is not None, masks is not None, seed, n))
        index = torch.arange(seed, seed + n)
        if masks is not None:
            assert torch.equal(masks.cpu(), self.subset.labels[index])
        if prompts is not None:
            assert prompts == [self.subset.captions[i] for i in index]
        tokens = (SIZE // 16) ** 2
        gates = [torch.softmax(torch.randn(n, tokens, EXPERTS), -1) for _ in range(STEPS)]
        images = self.subset.images[index]
        text_only = self.text_only_condition if masks is None else None
        return SampleOutput(images, gates, torch.linspace(1, 1 / STEPS, STEPS), text_only)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.layer(batch[0]).pow(2).mean())

    def val_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(2, 2)), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(8, 2))
        return torch.utils.data.DataLoader(data, batch_size=2)


def test_callback_logs_perfect_metrics_grids_and_gate_maps_every_n_steps_and_at_validation(tmp_path):
    subset = make_subset()
    clip = tiny_clip()
    metrics = GenerationMetrics(clip, clip=clip, parser=PaletteParser())
    config = GenerationEvalConfig(every_n_steps=2, modes=("mask", "text+mask"), batch_size=4, seed=0)
    callback = GenerationEvaluator(metrics, config, subset)
    module = PerfectGenerator(subset)
    trainer = L.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        callbacks=[callback],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module)

    # steps 2 and 4 and the validation at the epoch's end (step 4); two modes; batches of 4 over 10 items
    assert [c[2:] for c in module.calls[:3]] == [(0, 4), (4, 4), (8, 2)]
    assert {(c[0], c[1]) for c in module.calls} == {(False, True), (True, True)}
    assert len(module.calls) == 3 * 2 * 3
    logged = trainer.callback_metrics
    for mode in ("mask", "text+mask"):
        assert abs(float(logged[f"eval/{mode}/fid"])) < 1e-3
        assert abs(float(logged[f"eval/{mode}/cmmd"])) < 1e-6
        assert float(logged[f"eval/{mode}/mask_miou"]) == 1.0
        assert f"eval/{mode}/iou/skin" in logged and f"eval/{mode}/clip_score" in logged
    images = sorted(p.name for p in (tmp_path / "lightning_logs" / "version_0" / "images").iterdir())
    assert "eval_text+mask_samples_step000002_0.png" in images
    assert "eval_mask_gate_maps_step000004_1.png" in images
    assert metrics.num_real == N  # real features computed once
    assert module.training


@pytest.mark.parametrize("text_only_condition", ["background", "none"])
def test_the_text_modes_condition_is_logged_beside_its_metrics_and_it_draws_no_gate_maps(
    tmp_path, text_only_condition
):
    subset = make_subset()
    clip = tiny_clip()
    metrics = GenerationMetrics(clip, clip=clip, parser=PaletteParser())
    config = GenerationEvalConfig(every_n_steps=1, on_validation=False, modes=("text", "mask"), batch_size=N)
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=CSVLogger(tmp_path),
        callbacks=[GenerationEvaluator(metrics, config, subset)],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(PerfectGenerator(subset, text_only_condition))
    logs = tmp_path / "lightning_logs" / "version_0"
    hparams = yaml.safe_load((logs / "hparams.yaml").read_text())
    assert hparams == {"eval/text/text_only_condition": text_only_condition}
    images = {p.name for p in (logs / "images").iterdir()}
    assert "eval_text_samples_step000001_0.png" in images
    assert "eval_mask_gate_maps_step000001_0.png" in images
    assert not any(name.startswith("eval_text_gate_maps") for name in images)


def test_shares_are_contiguous_and_cover_the_subset():
    parts = [share(10, r, 3) for r in range(3)]
    assert [list(p) for p in parts] == [list(range(0, 3)), list(range(3, 7)), list(range(7, 10))]


def test_pictures_have_the_expected_layout():
    subset = make_subset()
    grid = sample_grid(subset.labels[:2], subset.images[:2], subset.images[:2], ["a", "b"])
    assert grid.dtype.name == "uint8" and grid.shape[1] == 3 * SIZE and grid.shape[0] > 2 * SIZE
    gates = [torch.full((1, 4, EXPERTS), 1.0 / EXPERTS) for _ in range(STEPS)]
    regions = region_gate_weights(gates, subset.labels[:1])  # (1, steps, 19, e)
    present = subset.labels[0, ::16, ::16].unique()
    assert torch.allclose(regions[0, :, present], torch.full_like(regions[0, :, present], 1.0 / EXPERTS))
    picture = gate_map(regions[0], torch.linspace(1, 0.3, STEPS), panels=2)
    assert picture.ndim == 3 and picture.shape[2] == 3


def test_a_sharded_model_needs_as_many_sample_batches_on_every_rank():
    evaluator = GenerationEvaluator(lambda: None, GenerationEvalConfig(batch_size=2))
    evaluator._check_lockstep(8, 2)  # 4 faces a rank: 2 batches each
    evaluator._check_lockstep(6, 2)  # 3 faces a rank: 2 batches each
    with pytest.raises(ValueError, match="data.eval_subset_size=5 gives the 2 ranks \\[1, 2\\] batches"):
        evaluator._check_lockstep(5, 2)  # 2 and 3 faces: 1 and 2 batches
