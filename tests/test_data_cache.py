from __future__ import annotations

import errno
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

import data_modules.cache.key as cache_key
import data_modules.cache.size as cache_size
from data_modules.cache import (
    DTYPES,
    CachedDataset,
    build_cache,
    estimate_size,
    fingerprint,
    folder_bytes,
    read_meta,
)
from data_modules.datamodule import DataConfig, FaceDataModule
from data_modules.dataset import Dropout, FaceDataset
from data_modules.layouts import scan
from data_modules.split import SplitConfig
from data_modules.synthetic import write_synthetic
from experiments.config.schema import ModelConfig
from experiments.training.build import build_denoiser
from facemogle.encode import encode_images, encode_prompts
from facemogle.face_parts import NUM_CONDITION_MAPS
from facemogle.lit_module import FaceMoGLEModule
from facemogle.tiny_backbone import tiny_flux

RES = 32


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Tiny convolutions gain nothing from a second thread and lose ~20x when the cores are shared.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def backbone():
    return tiny_flux()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic(tmp_path_factory.mktemp("faces"), n=8, size=RES, seed=0)


@pytest.fixture(scope="module")
def built(data, backbone, tmp_path_factory):
    records = scan(data).records
    folder = build_cache(
        records, backbone, RES, tmp_path_factory.mktemp("cache"), shard_size=3, progress=False
    )
    return records, folder


class Counter:
    """Wraps a module method and counts calls."""

    def __init__(self, monkeypatch, obj, name):
        self.calls = 0
        self.samples = 0  # leading size of the first tensor argument, summed over calls
        original = getattr(obj, name)

        def counted(*args, **kwargs):
            self.calls += 1
            self.samples += args[0].shape[0] if args and torch.is_tensor(args[0]) else 0
            return original(*args, **kwargs)

        monkeypatch.setattr(obj, name, counted)


def _counters(monkeypatch, backbone):
    return [
        Counter(monkeypatch, backbone.vae, "encode"),
        Counter(monkeypatch, backbone.text_encoder, "forward"),
        Counter(monkeypatch, backbone.text_encoder_2, "forward"),
    ]


def test_training_from_the_cache_calls_no_encoder(data, backbone, tmp_path, monkeypatch):
    config = DataConfig(
        root=str(data),
        resolution=RES,
        split=SplitConfig("fraction"),
        batch_size=2,
        cache=True,
        cache_dir=str(tmp_path),
    )
    dm = FaceDataModule(config, backbone)
    dm.prepare_data()
    counters = _counters(monkeypatch, backbone)
    encode_images(backbone, torch.zeros(1, 3, RES, RES))
    encode_prompts(backbone, ["probe"])
    assert [c.calls for c in counters] == [1, 1, 1]  # the counters see real calls
    dm.setup("fit")
    head = torch.nn.Linear(backbone.token_dim, 1)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1)
    steps = 0
    for _ in range(2):
        for batch in dm.train_dataloader():
            tokens = torch.cat([batch["image_latents"][:, None], batch["cond_latents"]], 1)  # (b, 21, l, d)
            loss = head(tokens).mean() + batch["text_sequence"].mean() * 0 + batch["text_pooled"].mean() * 0
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            steps += 1
    assert steps >= 4
    assert [c.calls for c in counters] == [1, 1, 1]
    b = next(iter(dm.train_dataloader()))
    assert b["cond_latents"].shape[:2] == (2, NUM_CONDITION_MAPS) and b["labels"].shape == (2, RES, RES)
    assert b["text_sequence"].shape == (2, backbone.max_sequence_length, 64) and b["text_pooled"].shape == (
        2,
        64,
    )


def test_cached_items_equal_re_encoding_with_the_posterior_mean(built, backbone):
    records, folder = built
    item = CachedDataset(folder, records)[4]
    fresh = FaceDataset(records, RES)[4]
    assert torch.allclose(item["image_latents"], encode_images(backbone, fresh["image"][None])[0], atol=1e-4)
    assert torch.allclose(item["cond_latents"], encode_images(backbone, fresh["cond_maps"]), atol=1e-4)
    text = encode_prompts(backbone, [records[4].captions[0]])
    assert torch.allclose(item["text_sequence"], text.sequence[0], atol=1e-5)
    assert torch.allclose(item["text_pooled"], text.pooled[0], atol=1e-5)
    assert torch.equal(item["labels"], fresh["labels"]) and item["caption"] == records[4].captions[0]


def test_cached_dropout_uses_the_empty_map_and_the_empty_prompt(built, backbone):
    records, folder = built
    common = load_file(folder / "common.safetensors")
    item = CachedDataset(folder, records, train=True, dropout=Dropout(1.0, 1.0))[1]
    assert torch.equal(
        item["cond_latents"][1:], common["empty_latent"].expand(NUM_CONDITION_MAPS - 1, -1, -1)
    )
    assert not torch.equal(item["cond_latents"][0], common["empty_latent"])
    empty = encode_prompts(backbone, [""])
    assert torch.allclose(item["text_sequence"], empty.sequence[0], atol=1e-5) and item["caption"] == ""
    blank = encode_images(backbone, torch.full((1, 3, RES, RES), -1.0))[0]
    assert torch.allclose(common["empty_latent"], blank, atol=1e-5)
    clean = CachedDataset(folder, records, train=False, dropout=Dropout(1.0, 1.0))[1]
    assert clean["cond_keep"].all() and clean["caption"] == records[1].captions[0]


def test_training_draws_among_all_cached_captions(built):
    records, folder = built
    torch.manual_seed(0)
    dataset = CachedDataset(folder, records, train=True)
    seen = {dataset[2]["caption"] for _ in range(60)}
    assert seen == set(records[2].captions)


def test_any_change_to_data_backbone_resolution_or_dtype_changes_the_fingerprint(data, backbone):
    records = scan(data).records
    base = fingerprint(records, backbone, RES)
    assert fingerprint(records, backbone, RES) == base
    assert fingerprint(records, backbone, 2 * RES) != base
    assert fingerprint(records, backbone, RES, dtype="bfloat16") != base
    assert fingerprint(records, tiny_flux(seed=1), RES) != base
    other = tiny_flux()
    other.max_sequence_length = 16
    assert fingerprint(records, other, RES) != base
    text = records[0].caption_file
    stat = text.stat()
    text.write_text(text.read_text().replace("e", "E", 1))
    assert fingerprint(scan(data).records, backbone, RES) != base
    text.write_text(text.read_text().replace("E", "e", 1))
    os.utime(text, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert fingerprint(scan(data).records, backbone, RES) == base


def test_an_interrupted_build_resumes_and_keeps_finished_shards(data, backbone, tmp_path, monkeypatch):
    records = scan(data).records
    folder = build_cache(records, backbone, RES, tmp_path, shard_size=3, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == [
        "common.safetensors",
        "meta.json",
        "shard_00000.safetensors",
        "shard_00001.safetensors",
        "shard_00002.safetensors",
    ]
    kept = (folder / "shard_00000.safetensors").stat().st_mtime_ns
    before = load_file(folder / "shard_00001.safetensors")
    (folder / "shard_00001.safetensors").unlink()
    (folder / ".shard_00001.safetensors.tmp").write_bytes(b"half a shard")  # left by a killed run
    with pytest.raises(ValueError, match="incomplete"):
        read_meta(folder)
    vae = Counter(monkeypatch, backbone.vae, "encode")
    assert build_cache(records, backbone, RES, tmp_path, shard_size=3, progress=False) == folder
    items = FaceDataset(records[3:6], RES)
    present = sum(int((items[i]["cond_maps"].flatten(1).amax(-1) > -1).sum()) for i in range(3))
    assert vae.samples == 3 + present  # only shard 1: its images and its non-empty condition maps
    assert (folder / "shard_00000.safetensors").stat().st_mtime_ns == kept
    after = load_file(folder / "shard_00001.safetensors")
    assert all(torch.allclose(before[k].float(), after[k].float(), atol=1e-5) for k in before)


def test_half_precision_storage(built, backbone, tmp_path):
    records, _ = built
    folder = build_cache(records[:2], backbone, RES, tmp_path, dtype="bfloat16", progress=False)
    item = CachedDataset(folder, records[:2])[0]
    assert item["image_latents"].dtype == torch.bfloat16 and item["cond_latents"].dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_items_are_the_direct_encodings_bit_for_bit_with_absent_maps_stored_once(
    data, backbone, tmp_path, dtype
):
    records = scan(data).records[:4]
    # batch 1: the build encodes each image and each map alone, as the direct encodings below do
    folder = build_cache(
        records, backbone, RES, tmp_path, dtype=dtype, shard_size=3, batch_size=1, progress=False
    )
    store = DTYPES[dtype]
    empty = encode_images(backbone, torch.full((1, 3, RES, RES), -1.0))[0].to(store)
    shard = load_file(folder / "shard_00000.safetensors")
    assert shard["cond_latents"].shape[0] == shard["cond_present"].sum() < 3 * NUM_CONDITION_MAPS
    dataset, faces = CachedDataset(folder, records), FaceDataset(records, RES)
    absent = 0
    for i in range(len(records)):
        item, fresh = dataset[i], faces[i]
        assert torch.equal(item["image_latents"], encode_images(backbone, fresh["image"][None])[0].to(store))
        present = fresh["cond_maps"].flatten(1).amax(-1) > -1
        absent += int((~present).sum())
        for k in range(NUM_CONDITION_MAPS):
            direct = encode_images(backbone, fresh["cond_maps"][k : k + 1])[0].to(store)
            assert torch.equal(item["cond_latents"][k], direct if present[k] else empty)
        text = encode_prompts(backbone, list(records[i].captions))  # one call per face, as the build's
        assert torch.equal(item["text_sequence"], text.sequence[0].to(store))
        assert torch.equal(item["text_pooled"], text.pooled[0].to(store))
        assert item["cond_latents"].dtype == store and torch.equal(item["labels"], fresh["labels"])
    assert absent > 0


def test_without_text_the_cache_holds_latents_only_and_items_carry_their_captions(built, backbone, tmp_path):
    records, with_text = built
    folder = build_cache(records, backbone, RES, tmp_path, shard_size=3, progress=False, text=False)
    assert folder.name != with_text.name and not read_meta(folder).text
    assert set(load_file(folder / "common.safetensors")) == {"empty_latent"}
    assert set(load_file(folder / "shard_00000.safetensors")) == {
        "image_latents",
        "cond_present",
        "cond_latents",
        "cond_offsets",
        "labels",
    }
    torch.manual_seed(0)
    item = CachedDataset(folder, records, train=True, dropout=Dropout(0.0, 0.5))[5]
    torch.manual_seed(0)
    same = CachedDataset(with_text, records, train=True, dropout=Dropout(0.0, 0.5))[5]
    assert "text_sequence" not in item and "text_pooled" not in item
    assert item["caption"] == same["caption"] and torch.equal(item["cond_keep"], same["cond_keep"])
    for k in ("image_latents", "cond_latents", "labels"):
        assert torch.equal(item[k], same[k])
    assert CachedDataset(folder, records, train=True, dropout=Dropout(1.0, 0.0))[5]["caption"] == ""


def test_without_cached_text_the_module_encodes_the_batch_captions(data, tmp_path):
    backbone = tiny_flux()
    module = FaceMoGLEModule(backbone, build_denoiser(backbone, ModelConfig()), resolution=RES)
    batches = {}
    for cache_text in (True, False):
        config = DataConfig(
            root=str(data),
            resolution=RES,
            split=SplitConfig("fraction"),
            batch_size=3,
            text_dropout=0.5,
            cache=True,
            cache_dir=str(tmp_path),
            cache_text=cache_text,
        )
        dm = FaceDataModule(config, backbone)
        dm.setup("fit")
        torch.manual_seed(0)
        batches[cache_text] = next(iter(dm.train_dataloader()))
    assert len(list(tmp_path.iterdir())) == 2  # the two choices never share a folder
    cached, captions = batches[True], batches[False]
    assert "text_sequence" not in captions and captions["caption"] == cached["caption"]
    assert "" in captions["caption"]  # text dropout fired for one of them, and "" is what gets encoded
    a, b = module.prepare(cached), module.prepare(captions)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.cond, b.cond)
    torch.testing.assert_close(b.text.sequence, a.text.sequence, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.text.pooled, a.text.pooled, atol=1e-5, rtol=0)


def test_without_text_the_fingerprint_ignores_the_text_encoders_but_never_matches_a_text_cache(
    data, backbone
):
    records = scan(data).records
    other = tiny_flux()
    with torch.no_grad():
        next(other.text_encoder_2.parameters()).add_(1.0)
    assert fingerprint(records, other, RES, text=False) == fingerprint(records, backbone, RES, text=False)
    assert fingerprint(records, other, RES) != fingerprint(records, backbone, RES)
    assert fingerprint(records, backbone, RES, text=False) != fingerprint(records, backbone, RES)


@pytest.mark.parametrize(("dtype", "text"), [("float32", True), ("bfloat16", True), ("bfloat16", False)])
def test_the_size_estimate_is_within_ten_percent_of_the_bytes_written(data, backbone, tmp_path, dtype, text):
    records = scan(data).records
    estimate = estimate_size(records, backbone, RES, dtype, text, shard_size=3)
    folder = build_cache(
        records, backbone, RES, tmp_path, dtype=dtype, shard_size=3, progress=False, text=text
    )
    stored = sum(int(load_file(f)["cond_present"].sum()) for f in folder.glob("shard_*.safetensors"))
    assert estimate.present_maps == stored and estimate.faces == 8
    assert abs(estimate.bytes - folder_bytes(folder)) <= 0.1 * folder_bytes(folder)
    sampled = estimate_size(records, backbone, RES, dtype, text, shard_size=3, sample=3)
    assert abs(sampled.bytes - folder_bytes(folder)) <= 0.1 * folder_bytes(folder)


def _free_space(monkeypatch, free: int) -> None:
    usage = shutil.disk_usage("/")
    monkeypatch.setattr(cache_size.shutil, "disk_usage", lambda path: usage._replace(free=free))


def test_a_disk_without_room_is_an_error_before_anything_is_written(data, backbone, tmp_path, monkeypatch):
    records = scan(data).records
    estimate = estimate_size(records, backbone, RES, "float32", True, shard_size=3)
    _free_space(monkeypatch, estimate.bytes - 1)
    vae = Counter(monkeypatch, backbone.vae, "encode")
    root = tmp_path / "cache"
    with pytest.raises(ValueError) as err:
        build_cache(records, backbone, RES, root, shard_size=3, progress=False)
    message = str(err.value)
    folder = cache_key.cache_folder(root, fingerprint(records, backbone, RES))
    for part in (str(folder), str(estimate.bytes), str(estimate.bytes - 1), "data.cache_dir"):
        assert part in message
    assert "data.cache_text=false" in message and "data.cache_dtype=bfloat16" in message
    assert not root.exists() and vae.calls == 0
    _free_space(monkeypatch, estimate.bytes)
    assert build_cache(records, backbone, RES, root, shard_size=3, progress=False) == folder


def test_a_write_that_fails_midway_leaves_no_half_written_file(data, backbone, tmp_path, monkeypatch):
    records = scan(data).records
    save_file = cache_key.save_file
    calls = []

    def disk_full_on_the_second_shard(tensors, path):
        calls.append(path)
        if len(calls) == 3:  # common, shard 0, then shard 1
            path.write_bytes(b"the first bytes of a shard")
            raise OSError(errno.ENOSPC, "No space left on device")
        save_file(tensors, path)

    monkeypatch.setattr(cache_key, "save_file", disk_full_on_the_second_shard)
    with pytest.raises(OSError, match="No space left") as err:
        build_cache(records, backbone, RES, tmp_path, shard_size=3, progress=False)
    folder = calls[0].parent
    assert str(folder) in "".join(err.value.__notes__)
    assert sorted(p.name for p in folder.iterdir()) == [
        "common.safetensors",
        "meta.json",
        "shard_00000.safetensors",
    ]
    monkeypatch.setattr(cache_key, "save_file", save_file)
    assert build_cache(records, backbone, RES, tmp_path, shard_size=3, progress=False) == folder
    assert len(CachedDataset(folder, records)) == len(records)
