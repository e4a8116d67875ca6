import json

import numpy as np
import pytest
import torch
from PIL import Image

from experiments import sample as sample_cli
from experiments.config.load import load_config
from experiments.runs.io import export_run, load_run
from experiments.sample import region_scales
from experiments.training.build import build_module
from facemogle.backbone import save_flux
from facemogle.export import manifest
from facemogle.mogle import MoGLEConfig
from facemogle.pipeline import FaceMoGLEPipeline
from facemogle.sampling import SampleSettings, sample


@pytest.fixture
def flux_dir(backbone, tmp_path):
    return save_flux(backbone, tmp_path / "flux")


def test_an_exported_run_loads_and_reproduces_its_samples(flux_dir, tmp_path):
    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    module = build_module(config)
    with torch.no_grad():
        for p in module.trainable_parameters():
            p.add_(torch.randn_like(p) * 0.05)  # as if trained
    export_run(config.run_dir, config, module.denoiser)
    run = load_run(config.run_dir)
    masks = torch.randint(0, 19, (2, 64, 64), generator=torch.Generator().manual_seed(0))
    settings = SampleSettings(steps=2)
    a = sample(
        module.backbone, module.denoiser, ["a face", "a face"], masks, height=64, width=64, settings=settings
    )
    b = sample(
        run.backbone, run.denoiser, ["a face", "a face"], masks, height=64, width=64, settings=settings
    )
    torch.testing.assert_close(a.images, b.images)
    assert run.config == config


def test_the_sample_cli_conditions_text_to_face_as_its_flag_says(flux_dir, tmp_path):
    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    export_run(config.run_dir, config, build_module(config).denoiser)
    faces = {}
    for condition in ("none", "background"):
        out = tmp_path / condition
        argv = ["--run", config.run_dir, "--prompt", "a face", "--out", str(out), "--steps", "2"]
        sample_cli.main([*argv, "--text-only-condition", condition])
        faces[condition] = np.asarray(Image.open(out / "text_seed0.png"), dtype=np.int16)
    assert np.abs(faces["none"] - faces["background"]).max() > 2
    with pytest.raises(SystemExit):
        sample_cli.main([*argv, "--text-only-condition", "mask"])


def test_loading_a_run_without_export_names_the_missing_file(tmp_path):
    with pytest.raises(ValueError, match="export/config.yaml is missing"):
        load_run(tmp_path)


def test_region_scale_maps_part_names_to_active_experts():
    scale = MoGLEConfig().expert_scale(region_scales(["hair=1.5", "global=0.5"]))
    assert scale[0] == 0.5 and scale[1 + 13] == 1.5 and scale.sum() == 18 + 2.0
    local = MoGLEConfig(expert_set="local").expert_scale({"background": 2})
    assert local.shape == (19,) and local[0] == 2
    assert MoGLEConfig().expert_scale({}) is None
    with pytest.raises(ValueError, match="no global expert"):
        MoGLEConfig(expert_set="local").expert_scale({"global": 2})
    with pytest.raises(ValueError, match="PART=SCALE"):
        region_scales(["beard=2"])
    with pytest.raises(ValueError, match="region scale 'beard'"):
        MoGLEConfig().expert_scale({"beard": 2})


def test_a_truncated_or_corrupted_export_is_an_error_naming_the_file(flux_dir, tmp_path):
    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    export = export_run(config.run_dir, config, build_module(config).denoiser)
    mogle = export / "mogle.safetensors"
    mogle.write_bytes(mogle.read_bytes()[:-100])  # a copy that stopped early
    with pytest.raises(ValueError, match=r"mogle.safetensors is corrupted or incomplete: its sha256 differs"):
        load_run(config.run_dir)
    (export / "lora" / "pytorch_lora_weights.safetensors").unlink()
    with pytest.raises(ValueError, match=r"pytorch_lora_weights.safetensors is missing"):
        load_run(config.run_dir)


def test_the_sample_cli_makes_n_images_of_every_condition(flux_dir, tmp_path):
    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    export_run(config.run_dir, config, build_module(config).denoiser)
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a", "b"):
        Image.fromarray(np.zeros((64, 64), dtype=np.uint8), mode="L").save(masks / f"{name}.png")
    common = ["--run", config.run_dir, "--steps", "1", "--n", "2", "--seed", "10"]
    sample_cli.main([*common, "--mask", str(masks / "a.png"), "--out", str(tmp_path / "one")])
    sample_cli.main([*common, "--masks", str(masks), "--prompt", "a face", "--out", str(tmp_path / "all")])
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["a_seed10.png", "a_seed11.png"]
    names = sorted(p.name for p in (tmp_path / "all").iterdir())  # mask j's k-th image: seed + j * n + k
    assert names == ["a_seed10.png", "a_seed11.png", "b_seed12.png", "b_seed13.png"]
    one, all_ = (np.asarray(Image.open(tmp_path / d / "a_seed11.png")) for d in ("one", "all"))
    assert not np.array_equal(one, all_)  # the second with the prompt, the first without


def test_an_export_without_its_manifest_or_with_an_unlisted_file_is_refused_unless_allowed(
    flux_dir, tmp_path, caplog
):
    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    export = export_run(config.run_dir, config, build_module(config).denoiser)
    (export / "notes.pkl").write_bytes(b"anything")
    with pytest.raises(ValueError, match=r"notes.pkl is not listed in .*manifest.json \(--allow-unverified"):
        load_run(config.run_dir)
    (export / "notes.pkl").unlink()
    (export / "manifest.json").unlink()
    with pytest.raises(ValueError, match=r"export has no manifest.json: its files cannot be checked"):
        load_run(config.run_dir)
    with caplog.at_level("WARNING", logger="facemogle.export"):
        assert load_run(config.run_dir, verify=False).config == config
    assert "loading it anyway (--allow-unverified)" in caplog.text
    argv = ["--run", config.run_dir, "--prompt", "a face", "--out", str(tmp_path / "out"), "--steps", "1"]
    with pytest.raises(ValueError, match="no manifest.json"):
        sample_cli.main(argv)
    sample_cli.main([*argv, "--allow-unverified"])
    assert (tmp_path / "out" / "text_seed0.png").is_file()


def test_an_export_config_reading_the_environment_is_refused_naming_the_key(flux_dir, tmp_path):
    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    export = export_run(config.run_dir, config, build_module(config).denoiser)
    yaml = (export / "config.yaml").read_text().replace("project: facemogle", "project: ${oc.env:HOME}")
    (export / "config.yaml").write_text(yaml)
    (export / "manifest.json").write_text(json.dumps(manifest(export)))  # as a tamperer would
    with pytest.raises(
        ValueError, match=r"config.yaml: logger.project='\$\{oc.env:HOME\}' calls the resolver"
    ):
        load_run(config.run_dir)
    with pytest.raises(ValueError, match=r"logger.project='\$\{oc.env:HOME\}'"):
        FaceMoGLEPipeline.from_pretrained(export)


def test_a_saved_pipeline_with_a_file_deleted_is_refused(flux_dir, tmp_path):
    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    export = export_run(config.run_dir, config, build_module(config).denoiser)
    FaceMoGLEPipeline.from_pretrained(export).save_pretrained(tmp_path / "pipe")
    assert FaceMoGLEPipeline.from_pretrained(tmp_path / "pipe") is not None
    (tmp_path / "pipe" / "lora" / "pytorch_lora_weights.safetensors").unlink()
    with pytest.raises(ValueError, match=r"pytorch_lora_weights.safetensors is missing from"):
        FaceMoGLEPipeline.from_pretrained(tmp_path / "pipe")


def test_a_region_scale_that_is_not_a_finite_non_negative_number_names_the_flag():
    for bad in ("hair=abc", "hair=nan", "hair=inf", "hair=-1"):
        with pytest.raises(
            ValueError, match=rf"--region-scale '{bad}' \(from the command line\): SCALE must"
        ):
            region_scales([bad])
    with pytest.raises(ValueError, match=r"region scale hair=nan: expected a finite number >= 0"):
        MoGLEConfig().expert_scale({"hair": float("nan")})  # the pipeline's region_scale= too


def test_a_masks_folder_of_mixed_formats_names_and_counts_the_skipped_files(flux_dir, tmp_path, caplog):
    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    export_run(config.run_dir, config, build_module(config).denoiser)
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = Image.fromarray(np.zeros((64, 64), dtype=np.uint8), mode="L")
    mask.save(masks / "a.png")
    mask.save(masks / "b.jpg")
    mask.save(masks / "c.jpeg")
    argv = ["--run", config.run_dir, "--masks", str(masks), "--out", str(tmp_path / "out"), "--steps", "1"]
    with caplog.at_level("WARNING", logger="experiments.sample"):
        sample_cli.main(argv)
    assert "skipped 2 file(s)" in caplog.text and "b.jpg, c.jpeg" in caplog.text
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a_seed0.png"]


def test_an_export_tensor_of_another_shape_names_the_file_the_key_and_both_shapes(flux_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    config = load_config(overrides=[f"backbone.path={flux_dir}", f"run_dir={tmp_path / 'run'}"])
    export = export_run(config.run_dir, config, build_module(config).denoiser)
    weights = load_file(export / "mogle.safetensors")
    key = sorted(weights)[0]
    weights[key] = torch.zeros(3, 5)
    save_file(weights, export / "mogle.safetensors")
    with pytest.raises(
        ValueError, match=rf"mogle.safetensors: {key} has shape \(3, 5\), the model expects \("
    ):
        load_run(config.run_dir, verify=False)
