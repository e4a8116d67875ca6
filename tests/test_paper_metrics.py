"""The paper's own evaluation on small models of the real classes: the DINO structure distance against a
direct reimplementation of the official code, clean-fid's resize and formulas (and the clean-fid package
itself where it is installed), the CLIP text score and CMMD, ImageReward's checkpoint mapping."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import ViTModel

from facemogle.evaluators import SmallClipConfig, build_small_clip, label_map_for, load_clip, save_clip
from facemogle.evaluators.clean_inception import (
    clean_resize,
    load_clean_inception,
    save_tiny_inception,
)
from facemogle.evaluators.dino import DinoKeys, SmallDinoConfig, build_small_dino, load_dino, save_dino
from facemogle.evaluators.paper_clip import ClipTextScore, CmmdEmbedding, openai_clip_pixels
from facemogle.face_parts import PARTS
from facemogle.metrics import (
    CMMD,
    CleanFidKid,
    DinoStructureDistance,
    MeanScore,
    fid_from_features,
    kernel_distance,
)
from facemogle.tiny_tokenizers import build_clip_tokenizer


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1]: blocky colours plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (smooth + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)


def perturbed(x: torch.Tensor, amount: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + amount * torch.randn(x.shape, generator=g)).clamp(0, 1)


# --- DINO structure distance -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    """A ViT with DINO's layout, 4 x 4 patches of 8 in its position table, saved as facebook/dino-vitb8 is."""
    config = SmallDinoConfig(image_size=32, patch_size=8, hidden_size=32, layers=3, heads=4)
    return save_dino(build_small_dino(config, seed=3), tmp_path_factory.mktemp("dino"))


def official_keys_self_sim(vit: ViTModel, image: torch.Tensor, layer: int) -> torch.Tensor:
    """eval_mask.py's VitExtractor on one image, as DINO's own ViT runs it: fused qkv, the qkv output of
    block `layer` reshaped (t, 3, heads, d) -> keys (heads, t, d) -> (t, heads * d), attn_cosine_sim."""
    config = vit.config
    heads, width, patch = config.num_attention_heads, config.hidden_size, config.patch_size
    x = image[None]
    _, _, h, w = x.shape
    x = F.conv2d(
        x,
        vit.embeddings.patch_embeddings.projection.weight,
        vit.embeddings.patch_embeddings.projection.bias,
        stride=patch,
    )
    x = torch.cat((vit.embeddings.cls_token, x.flatten(2).transpose(1, 2)), 1)
    table = vit.embeddings.position_embeddings
    n = table.shape[1] - 1
    if x.shape[1] - 1 != n or h != w:  # DINO's interpolate_pos_encoding
        w0, h0 = h // patch + 0.1, w // patch + 0.1
        side = int(math.sqrt(n))
        grid = F.interpolate(
            table[:, 1:].reshape(1, side, side, width).permute(0, 3, 1, 2),
            scale_factor=(w0 / side, h0 / side),
            mode="bicubic",
        )
        table = torch.cat((table[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, width)), 1)
    x = x + table
    for i, block in enumerate(vit.encoder.layer if hasattr(vit, "encoder") else vit.layers):
        attention = block.attention
        if hasattr(attention, "k_proj"):
            q, k, v, out = attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj
        else:
            q, k, v, out = (
                attention.attention.query,
                attention.attention.key,
                attention.attention.value,
                attention.output.dense,
            )
        qkv_weight = torch.cat((q.weight, k.weight, v.weight))
        qkv_bias = torch.cat((q.bias, k.bias, v.bias))
        qkv = F.linear(block.layernorm_before(x), qkv_weight, qkv_bias)  # (1, t, 3D): DINO's attn.qkv output
        t = qkv.shape[1]
        if i == layer:
            keys = qkv.reshape(t, 3, heads, width // heads).permute(1, 2, 0, 3)[1]  # get_keys_from_qkv
            concatenated = keys.transpose(0, 1).reshape(t, width)
            norms = concatenated.norm(dim=1, keepdim=True)
            return (concatenated @ concatenated.T) / (norms @ norms.T).clamp(min=1e-8)
        parts = qkv.reshape(1, t, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        attn = (parts[0] @ parts[1].transpose(-2, -1)) * (width // heads) ** -0.5
        x = x + out((attn.softmax(-1) @ parts[2]).transpose(1, 2).reshape(1, t, width))
        x = x + block.mlp.fc2(F.gelu(block.mlp.fc1(block.layernorm_after(x))))
    raise AssertionError("layer beyond the model")


def test_dino_distance_matches_the_official_formula_on_the_same_vit(dino_dir):
    """70 pairs at 48^2 (a 6 x 6 grid from a 4 x 4 table): two batches of 64 and 6 in the official loop."""
    vit = ViTModel.from_pretrained(dino_dir, add_pooling_layer=False).eval()
    real, fake = images(70, 48, seed=0), perturbed(images(70, 48, seed=0), 0.2)
    per_image = []
    with torch.no_grad():
        for a, b in zip(real, fake, strict=True):
            per_image.append(F.mse_loss(official_keys_self_sim(vit, b, 1), official_keys_self_sim(vit, a, 1)))
    batches = [sum(per_image[s : s + 64]) for s in range(0, 70, 64)]
    official = sum(batches) / len(batches)

    metric = DinoStructureDistance(load_dino(dino_dir, layer=1))
    for s in range(0, 70, 16):
        metric.update(fake[s : s + 16], real[s : s + 16])
    got = metric.compute()
    assert float(official) > 0
    torch.testing.assert_close(got["official"].float(), official.float(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(got["per_image"].float(), torch.stack(per_image).mean(), rtol=1e-5, atol=1e-8)


def test_dino_distance_is_zero_on_identical_sets_and_grows_with_the_perturbation(dino_dir):
    dino = load_dino(dino_dir)
    real = images(8, 32)
    values = []
    for amount in (0.0, 0.05, 0.3):
        metric = DinoStructureDistance(dino)
        metric.update(perturbed(real, amount) if amount else real.clone(), real)
        values.append(float(metric.compute()["per_image"]))
    assert values[0] == 0.0 and 0 < values[1] < values[2]


def test_per_image_distance_ignores_batching_and_the_official_figure_does_not(dino_dir):
    dino = load_dino(dino_dir)
    real, fake = images(65, 32), perturbed(images(65, 32), 0.2)
    results = []
    for batch in (1, 13, 65):
        metric = DinoStructureDistance(dino)
        for s in range(0, 65, batch):
            metric.update(fake[s : s + batch], real[s : s + batch])
        results.append(metric.compute())
    for r in results[1:]:
        torch.testing.assert_close(r["per_image"], results[0]["per_image"], rtol=1e-6, atol=0)
    # 65 images are two official batches: the figure is the sum over both halves, not 64 x the mean
    torch.testing.assert_close(results[0]["official"], results[0]["per_image"] * 65 / 2)


def test_splice_preprocessing_reads_224_pixels_normalised(dino_dir):
    vit = ViTModel.from_pretrained(dino_dir, add_pooling_layer=False)
    official, splice = DinoKeys(vit, preprocessing="official"), DinoKeys(vit, preprocessing="splice")
    x = images(2, 64)
    assert official(x).shape == (2, 1 + 8 * 8, 1 + 8 * 8)
    assert splice(x).shape == (2, 1 + 28 * 28, 1 + 28 * 28)
    pixels = splice.pixels(x)
    assert pixels.shape[-2:] == (224, 224) and pixels.min() < 0  # ImageNet-normalised
    with pytest.raises(ValueError, match="preprocessing 'resize'"):
        DinoKeys(vit, preprocessing="resize")
    with pytest.raises(ValueError, match="no DINO ViT here.*facebook/dino-vitb8"):
        load_dino(dino_dir / "missing")


def test_dino_loads_with_dinos_layer_norm_eps_whatever_the_config_says(dino_dir, tmp_path):
    vit = ViTModel.from_pretrained(dino_dir, add_pooling_layer=False)
    vit.config.layer_norm_eps = 1e-12  # as the Hub's facebook/dino-* configs have it
    vit.save_pretrained(tmp_path)
    loaded = load_dino(tmp_path).model
    assert loaded.config.layer_norm_eps == 1e-6 and loaded.layernorm.eps == 1e-6


# --- clean-fid ---------------------------------------------------------------------------------------


def test_clean_resize_is_pil_bicubic_per_channel_in_float_mode():
    x = (images(2, 40) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    got = clean_resize(x)
    for i in range(2):
        for c in range(3):
            channel = Image.fromarray(x[i, :, :, c].astype(np.float32), mode="F").resize(
                (299, 299), Image.BICUBIC
            )
            np.testing.assert_array_equal(got[i, c].numpy(), np.asarray(channel).clip(0, 255))
    assert got.shape == (2, 3, 299, 299) and got.dtype == torch.float32


def test_clean_fid_equals_the_frechet_distance_from_eigenvalues():
    g = np.random.default_rng(0)
    real, fake = g.normal(size=(200, 8)), g.normal(size=(150, 8)) * 1.3 + 0.2
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    root = np.linalg.cholesky(s1)  # tr sqrt(s1 s2) = sum of sqrt eigenvalues of L^T s2 L
    trace_sqrt = np.sqrt(np.linalg.eigvalsh(root.T @ s2 @ root)).sum()
    diff = real.mean(0) - fake.mean(0)
    want = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert fid_from_features(real, fake) == pytest.approx(want, rel=1e-9)
    assert abs(fid_from_features(real, real)) < 1e-9


def test_clean_kid_is_the_unbiased_polynomial_mmd_and_reproducible():
    g = np.random.default_rng(1)
    real, fake = g.normal(size=(12, 5)), g.normal(size=(12, 5)) + 0.5
    d, m = 5, 12  # all 12 in every subset: the value is the full-set estimate whatever the draw

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    kxx, kyy, kxy = k(fake, fake), k(real, real), k(fake, real)
    want = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m - 1) / m - 2 * kxy.sum() / m**2
    assert kernel_distance(real, fake, subsets=3) == pytest.approx(want, rel=1e-9)
    big_real, big_fake = g.normal(size=(40, 5)), g.normal(size=(30, 5))
    assert kernel_distance(big_real, big_fake, 5, 10, seed=42) == kernel_distance(
        big_real, big_fake, 5, 10, seed=42
    )
    assert kernel_distance(big_real, big_fake, 5, 10, seed=42) != kernel_distance(
        big_real, big_fake, 5, 10, seed=0
    )


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return load_clean_inception(
        save_tiny_inception(tmp_path_factory.mktemp("inception") / "inception-2015-12-05.pt", 16)
    )


def test_clean_fid_metric_is_zero_on_identical_sets_worse_when_perturbed_and_batch_independent(inception):
    real = images(24, 48)
    features = inception(real)
    assert torch.equal(torch.cat([inception(real[s : s + 5]) for s in range(0, 24, 5)]), features)
    metric = CleanFidKid()
    metric.update(features, real=True)
    metric.update(features, real=False)
    same = metric.compute()
    scores = [same]
    for amount in (0.1, 0.4):
        metric.reset()  # keeps the real features
        metric.update(inception(perturbed(real, amount)), real=False)
        scores.append(metric.compute())
    # the unbiased KID of a set against itself is its floor, <= 0 (Cauchy-Schwarz on the kernel's features)
    assert abs(same["fid"]) < 1e-6 and same["kid"] <= 0
    assert 0 < scores[1]["fid"] < scores[2]["fid"] and same["kid"] < scores[1]["kid"] < scores[2]["kid"]


def test_tiny_inception_has_the_torchscript_interface(tmp_path):
    scripted = torch.jit.load(str(save_tiny_inception(tmp_path / "inception-2015-12-05.pt", 2048)))
    x = torch.rand(2, 3, 64, 64) * 255
    features = scripted(x, return_features=True)
    assert features.shape == (2, 2048)
    resized = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(scripted.layers((resized - 128) / 128).flatten(1), features)
    assert scripted(x).sum(1).allclose(torch.ones(2))  # class probabilities
    assert load_clean_inception(tmp_path).num_features == 2048  # a directory holding the file


def test_a_missing_or_wrong_inception_is_a_named_error(tmp_path):
    with pytest.raises(
        ValueError, match=r"no torchscript Inception here.*nvlabs-fi-cdn.*inception-2015-12-05.pt"
    ):
        load_clean_inception(tmp_path / "inception-2015-12-05.pt")
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "other.pt"))
    with pytest.raises(ValueError, match="no `layers` module"):
        load_clean_inception(tmp_path / "other.pt")


def test_agrees_with_the_clean_fid_package_on_the_same_folders(tmp_path, monkeypatch):
    pytest.importorskip(
        "cleanfid", reason="clean-fid is not installed: it is in the `gpu` extra, since it needs torchvision"
    )
    from cleanfid import features as cleanfid_features
    from cleanfid import fid
    from cleanfid.inception_torchscript import InceptionV3W

    save_tiny_inception(tmp_path / "inception-2015-12-05.pt", 2048)
    # clean-fid's own wrapper, reading our file instead of downloading NVIDIA's
    monkeypatch.setattr(
        cleanfid_features,
        "InceptionV3W",
        lambda path, download, resize_inside: InceptionV3W(
            str(tmp_path), download=False, resize_inside=resize_inside
        ),
    )
    sets = {"real": images(30, 40, seed=0), "fake": perturbed(images(30, 40, seed=5), 0.1)}
    for name, x in sets.items():
        (tmp_path / name).mkdir()
        for i, array in enumerate((x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()):
            Image.fromarray(array).save(tmp_path / name / f"{i:03d}.png")
    folders = [str(tmp_path / "real"), str(tmp_path / "fake")]
    options = {
        "mode": "clean",
        "batch_size": 8,
        "num_workers": 0,
        "device": torch.device("cpu"),
        "verbose": False,
    }
    want_fid = fid.compute_fid(*folders, use_dataparallel=False, **options)
    np.random.seed(42)
    want_kid = fid.compute_kid(*folders, use_dataparallel=False, **options) * 1000

    network = load_clean_inception(tmp_path / "inception-2015-12-05.pt")
    metric = CleanFidKid()
    for name in sets:
        loaded = torch.stack(
            [torch.from_numpy(np.array(Image.open(tmp_path / name / f"{i:03d}.png"))) for i in range(30)]
        )
        metric.update(network(loaded.permute(0, 3, 1, 2).float() / 255), real=name == "real")
    got = metric.compute()
    assert got["fid"] == pytest.approx(want_fid, rel=1e-4)
    assert got["kid"] == pytest.approx(want_kid, rel=1e-3, abs=1e-4)


# --- CLIP text score and CMMD ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    config = SmallClipConfig(image_size=32, patch_size=8, hidden_size=32, layers=1, heads=2, projection_dim=8)
    path = tmp_path_factory.mktemp("clip")
    save_clip(build_small_clip(build_clip_tokenizer(vocab_size=300), config, seed=0), path)
    return load_clip(path)


def test_text_score_is_clip_models_own_logit_for_the_pair(clip):
    x, captions = images(4, 48), ["she has black hair", "he is bald", "a smiling woman", "blond wavy hair"]
    scores = ClipTextScore(clip)(x, captions)
    tokens = clip.tokenize(captions)
    pixels = openai_clip_pixels(x, 32, clip.mean, clip.std)
    with torch.no_grad():
        logits = clip.model(
            input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, pixel_values=pixels
        )
    torch.testing.assert_close(scores, logits.logits_per_image.diagonal(), rtol=1e-5, atol=1e-5)
    mean = MeanScore()
    for s in range(4):
        mean.update(ClipTextScore(clip)(x[s : s + 1], captions[s : s + 1]))
    torch.testing.assert_close(mean.compute().float(), scores.mean(), rtol=1e-5, atol=1e-6)


def test_openai_preprocessing_resizes_the_shorter_side_then_crops_the_centre():
    x = images(1, 40)
    wide = torch.cat((x, x[..., :20]), -1)  # 40 x 60
    pixels = openai_clip_pixels(wide, 20, (0, 0, 0), (1, 1, 1))
    array = (wide[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    want = Image.fromarray(array).resize((30, 20), Image.BICUBIC).crop((5, 0, 25, 20))
    torch.testing.assert_close(
        pixels[0], torch.from_numpy(np.asarray(want, dtype=np.float32) / 255).permute(2, 0, 1)
    )


def test_cmmd_with_the_paper_embedding_is_zero_on_identical_sets_and_worse_when_perturbed(clip):
    embed = CmmdEmbedding(clip)
    real = images(16, 48)
    e = embed(real)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(16))
    torch.testing.assert_close(torch.cat([embed(real[i : i + 3]) for i in range(0, 16, 3)]), e)
    values = []
    for amount in (0.0, 0.1, 0.5):
        metric = CMMD()
        metric.update(e, real=True)
        metric.update(embed(perturbed(real, amount)) if amount else e, real=False)
        values.append(float(metric.compute()))
    assert abs(values[0]) < 1e-9 and 0 < values[1] < values[2]


def test_parser_label_orders_of_the_common_face_parsers():
    assert label_map_for(PARTS) == list(range(19))  # CelebAMask-HQ, and jonathandinu/face-parsing's id2label
    early_copy = ("background", "skin.png", "nose.png", "r_eye.png", "l_eye.png", "r_brow.png", "l_brow.png",
                  "r_ear.png", "l_ear.png", "mouth.png", "u_lip.png", "l_lip.png", "neck.png", "hair.png",
                  "neck_l.png", "cloth.png", "eye_g.png", "hat.png", "ear_r.png")  # fmt: skip
    mapping = label_map_for(early_copy)
    assert [PARTS[i] for i in mapping] == [name.removesuffix(".png") for name in early_copy]


def test_the_standins_command_writes_every_model_in_its_real_format(tmp_path):
    from experiments import paper_evaluators

    paper_evaluators.main(["--out", str(tmp_path / "paper"), "--image-size", "32"])
    manifest = json.loads((tmp_path / "paper" / "manifest.json").read_text())
    assert manifest["trained"] is False and manifest["inception"]["num_features"] == 64
    assert load_clean_inception(tmp_path / "paper").num_features == 64
    assert load_dino(tmp_path / "paper" / "dino")(images(1, 32)).shape == (1, 17, 17)
