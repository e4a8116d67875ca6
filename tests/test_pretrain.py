import json

import torch

from data_modules.synthetic import write_synthetic
from experiments.pretrain_backbone import (
    ImagesAndMaps,
    _encode_captions,
    _normalised_latents,
    parse_args,
    pretrain,
)
from facemogle.backbone import TinyFluxConfig, load_flux, tiny_flux
from facemogle.encode import encode_images, encode_prompts
from facemogle.face_parts import split_mask


def test_vae_samples_are_faces_or_the_faces_own_condition_maps():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 8, 8, generator=g) * 2 - 1
    labels = torch.randint(0, 19, (3, 8, 8), generator=g)
    assert all(torch.equal(ImagesAndMaps(images, labels, 0.0)[i]["image"], images[i]) for i in range(3))
    maps = ImagesAndMaps(images, labels, 1.0)
    for i in range(3):
        own = split_mask(labels[i])
        present = {0} | {1 + int(k) for k in labels[i].unique()}
        for _ in range(5):
            sample = maps[i]["image"]
            matches = [k for k in range(20) if torch.equal(sample, own[k])]
            assert matches and matches[0] in present  # never the empty map of an absent part


def test_captions_encoded_in_chunks_are_each_faces_own_embeddings():
    backbone = tiny_flux(TinyFluxConfig(), seed=0)
    captions = [["a woman with black hair", "she smiles"], ["a man"], ["short hair", "glasses", "a beard"]]
    chunked = _encode_captions(backbone, captions, chunk=2)  # chunks cross the faces' boundaries
    assert [len(t) for t in chunked] == [2, 1, 3]
    for got, caps in zip(chunked, captions, strict=True):
        want = encode_prompts(backbone, caps)
        torch.testing.assert_close(got.sequence, want.sequence)
        torch.testing.assert_close(got.pooled, want.pooled)


def test_pretrain_writes_a_loadable_flux_directory(tmp_path):
    data = write_synthetic(tmp_path / "data", n=24, size=64, seed=0)
    out = tmp_path / "tiny-flux"
    args = parse_args(
        ["--data", str(data), "--out", str(out), "--batch", "4", "--vae-steps", "2", "--flux-steps", "2"]
        + ["--flux-batch", "2", "--flux-decay-steps", "1"]
    )
    report = pretrain(args)
    assert report["train_images"] > 0 and report["vae_mse"] > 0 and report["flux_loss"] > 0
    assert json.loads((out / "stage1.json").read_text())["train_images"] == report["train_images"]
    assert not (tmp_path / "tiny-flux.partial").exists()
    backbone = load_flux(out)
    assert backbone.vae.config.scaling_factor != 1.0  # latents normalised from the training images


def test_normalised_latents_are_what_encode_images_returns_afterwards():
    backbone = tiny_flux(TinyFluxConfig(), seed=0, corpus=["a face"])
    images = torch.rand(70, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = _normalised_latents(backbone, images)
    assert abs(latents.mean().item()) < 1e-4 and abs(latents.std().item() - 1) < 1e-4
    # one encoding pass instead of two: stage 1's FLUX trains on exactly the latents stage 2 caches
    again = torch.cat([encode_images(backbone, chunk) for chunk in images.split(64)])
    assert torch.equal(latents, again)
