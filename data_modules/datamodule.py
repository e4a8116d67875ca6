"""FaceDataModule: scan + validate a face data set, split it, serve items from disk or from the latent cache.

With `cache=True` (needs the backbone) the first `prepare_data` / `setup` encodes the whole set once
(data_modules.cache) and the dataloaders serve latents and text embeddings: a training step runs no
VAE or text encoder. With `cache_text=False` the cache holds no text embeddings (their padded T5
sequences are most of its size) and the training step encodes the batch's captions instead. The build
estimates the cache's size first and stops with a ValueError when the disk lacks the room.
Batches are the collated dicts of FaceDataset / CachedDataset, e.g. for the cached path
image_latents (b, l, d), cond_latents (b, 20, l, d), labels (b, H, W), cond_keep (b, 20),
caption / key: lists of b strings, and with cache_text text_sequence (b, s, D), text_pooled (b, P).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from data_modules.cache import (
    DTYPES,
    CachedDataset,
    build_cache,
    cache_folder,
    fingerprint,
    is_complete,
    read_meta,
)
from data_modules.dataset import Dropout, FaceDataset, load_faces
from data_modules.layouts import FaceRecord, Scan, scan
from data_modules.resumable import ResumableSampler, SeededItems
from data_modules.source import DataSource
from data_modules.split import Split, split_keys, split_records
from data_modules.validate import Report, validate
from facemogle.backbone import FluxBackbone
from facemogle.faces import Faces
from facemogle.rules import AT_LEAST_ONE, NON_NEGATIVE, PROBABILITY, Range

log = logging.getLogger(__name__)


@dataclass
class DataConfig(DataSource):
    batch_size: int = 4
    eval_batch_size: int | None = None  # defaults to batch_size
    num_workers: int = 0
    text_dropout: float = 0.1
    region_dropout: float = 0.1
    cache: bool = False
    cache_dir: str = "cache/latents"
    cache_dtype: str = "float32"  # float32 | float16 | bfloat16
    cache_text: bool = True  # False: captions encoded each step instead of their T5 / CLIP outputs cached
    # encode the cache there (e.g. "cuda"; "auto": cuda when there is one), then move the encoders back
    cache_device: str | None = None
    cache_batch_size: int = 8
    strict: bool = True  # False: skip bad items (logged) instead of raising
    eval_subset_size: int = 32  # validation faces the generation metrics sample during training

    RULES: ClassVar[dict[str, Range]] = {
        **DataSource.RULES,
        "batch_size": AT_LEAST_ONE,
        "num_workers": NON_NEGATIVE,
        "text_dropout": PROBABILITY,
        "region_dropout": PROBABILITY,
        "cache_batch_size": AT_LEAST_ONE,
        "eval_subset_size": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        if self.cache_dtype not in DTYPES:
            raise ValueError(f"cache_dtype {self.cache_dtype!r} is not one of {tuple(DTYPES)}")
        super().__post_init__()


class FaceDataModule(L.LightningDataModule):
    def __init__(self, config: DataConfig, backbone: FluxBackbone | None = None):
        super().__init__()
        if config.cache and backbone is None:
            raise ValueError("DataConfig.cache=True needs the backbone to encode the cache")
        self.config = config
        self.backbone = backbone
        self.report: Report | None = None
        self.split: Split | None = None
        self.records: list[FaceRecord] = []  # the validated faces that `split` divides
        self.cache_folder: Path | None = None
        self.datasets: dict[str, Dataset] = {}
        self._cached: tuple[list[FaceRecord], Path] | None = None

    def _scan(self) -> Scan:
        return scan(self.config.root, self.config.layout, self.config.captions)

    def prepare_data(self) -> None:
        if self.config.cache:
            self._ensure_cache()

    def _ensure_cache(self) -> tuple[list[FaceRecord], Path]:
        """The validated records and their complete cache folder, building it when missing.

        The folder is named by the fingerprint of the scan (files, captions, scan problems), so a
        second run finds it without decoding every image again; the validation outcome is in its meta."""
        if self._cached is None:
            self._cached = self._find_or_build_cache()
        return self._cached

    def _find_or_build_cache(self) -> tuple[list[FaceRecord], Path]:
        c, scanned = self.config, self._scan()
        key = fingerprint(
            scanned.records, self.backbone, c.resolution, c.cache_dtype, scanned.problems, c.cache_text
        )
        folder = cache_folder(c.cache_dir, key)
        if is_complete(folder):
            meta = read_meta(folder)
            if meta.problems and c.strict:
                raise ValueError(f"{meta.problems[0]} (found when the cache {folder} was built)")
            if meta.problems:
                log.warning("data validation (cached): skipped items for: %s", "; ".join(meta.problems))
            by_key = {r.key: r for r in scanned.records}
            return [by_key[k] for k in meta.keys], folder
        report = validate(scanned, strict=c.strict)
        self.report = report
        if not report.records:  # before encoding a cache of nothing
            raise ValueError(f"{c.root}: no usable faces, {len(report.problems)} items skipped as bad")
        if self._fitting():  # the batch against the split before hours of encoding, not after
            self._check_training_size(len(split_keys({r.key: r for r in report.records}, c.split).train))
        device = next(self.backbone.vae.parameters()).device
        cache_device = c.cache_device
        if cache_device == "auto":
            cache_device = "cuda" if torch.cuda.is_available() else None
        if cache_device is not None:
            self._move_encoders(cache_device)
        try:
            build_cache(
                report.records,
                self.backbone,
                c.resolution,
                c.cache_dir,
                dtype=c.cache_dtype,
                problems=report.problems,
                batch_size=c.cache_batch_size,
                num_workers=c.num_workers,
                key=key,
                text=c.cache_text,
            )
        finally:
            if cache_device is not None:
                self._move_encoders(device)
        return report.records, folder

    def _move_encoders(self, device) -> None:
        for module in (self.backbone.vae, self.backbone.text_encoder, self.backbone.text_encoder_2):
            module.to(device)

    def _validate(self) -> Report:
        if self.report is None:
            self.report = validate(self._scan(), strict=self.config.strict)
        return self.report

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        c = self.config
        if c.cache:
            records, self.cache_folder = self._ensure_cache()
        else:
            records = self._validate().records
        self.records = records
        by_key = {r.key: r for r in records}
        self.split = split_keys(by_key, c.split)
        if stage in (None, "fit"):
            self._check_training_size(len(self.split.train))
        dropout = Dropout(c.text_dropout, c.region_dropout)
        for name, keys in (("train", self.split.train), ("val", self.split.val), ("test", self.split.test)):
            part = [by_key[k] for k in keys]
            train = name == "train"
            if c.cache:
                self.datasets[name] = CachedDataset(self.cache_folder, part, train=train, dropout=dropout)
            else:
                self.datasets[name] = FaceDataset(part, c.resolution, train=train, dropout=dropout)
        log.info(
            "data: %s train, %s val, %s test items",
            *(len(self.datasets[n]) for n in ("train", "val", "test")),
        )

    def _check_training_size(self, n: int) -> None:
        """A split with no batch to train on is an error here, not a run that exits having trained nothing."""
        c, trainer = self.config, self._trainer
        world = trainer.world_size if trainer else 1
        skipped = f", {len(self.report.problems)} items skipped as bad" if self.report else ""
        if n == 0:
            raise ValueError(f"{c.root}: no usable training faces{skipped}; nothing to train")
        if n < c.batch_size * world:
            raise ValueError(
                f"data.batch_size={c.batch_size} x {world} processes is more than the {n} training faces "
                f"of {c.root}{skipped}"
            )

    def _fitting(self) -> bool:
        trainer = self._trainer
        return trainer is None or trainer.state.fn == "fit"

    @property
    def _trainer(self):
        return getattr(self, "trainer", None)

    def _loader(self, name: str) -> DataLoader:
        """Evaluation loaders: fixed order, no dropout."""
        if not self.datasets:
            raise ValueError("call setup() before asking for a dataloader")
        c = self.config
        return DataLoader(
            self.datasets[name],
            batch_size=c.eval_batch_size or c.batch_size,
            shuffle=False,
            num_workers=c.num_workers,
            persistent_workers=c.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        if not self.datasets:
            raise ValueError("call setup() before asking for a dataloader")
        c, dataset = self.config, self.datasets["train"]
        trainer = self._trainer
        sampler = ResumableSampler(
            len(dataset),
            c.batch_size,
            seed=c.split.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
            consumed=self._consumed_batches,
        )
        return DataLoader(
            SeededItems(dataset),
            batch_size=c.batch_size,
            sampler=sampler,
            num_workers=c.num_workers,
            persistent_workers=c.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def eval_subset(self) -> Faces:
        """The first `eval_subset_size` validation faces (key order) with their first captions, from disk."""
        if self.split is None:
            raise ValueError("call setup() before asking for the evaluation subset")
        c = self.config
        return load_faces(split_records(self.records, c.split, "val", c.eval_subset_size), c.resolution)

    def _consumed_batches(self) -> int:
        """Batches of the current epoch this rank already trained on: non-zero when resuming mid-epoch.
        (Lightning restores its batch progress before it creates the epoch's iterator.)"""
        trainer = self._trainer
        if trainer is None or not trainer.training:
            return 0
        return trainer.fit_loop.epoch_loop.batch_progress.current.ready

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
