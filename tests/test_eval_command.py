"""`python -m experiments.evaluate` on a tiny exported run, small synthetic data and tiny evaluators."""

from __future__ import annotations

import json

import pytest
import torch

from data_modules.synthetic import write_synthetic
from experiments import evaluate
from experiments.config.load import load_config
from experiments.evaluation.protocol import PAPER_DIFFERENCES, PAPER_SOURCE, paper_table
from experiments.runs.io import export_run
from experiments.training.build import build_module
from facemogle.backbone import save_flux
from facemogle.evaluators import load_clip, load_face_parser
from facemogle.face_parts import PARTS
from facemogle.release import sha256


@pytest.fixture
def evaluator_dirs(evaluators):
    return evaluators / "clip", evaluators / "parser"


def test_saved_evaluators_load_back_with_the_same_outputs(evaluator_dirs):
    clip_dir, parser_dir = evaluator_dirs
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    clip, parser = load_clip(clip_dir), load_face_parser(parser_dir)
    torch.testing.assert_close(clip(images), load_clip(clip_dir)(images))
    assert parser.parse(images).shape == (2, 64, 64)
    reordered = load_face_parser(parser_dir, "face-parsing.pytorch")
    assert not torch.equal(reordered(images), parser(images))


def test_evaluate_writes_json_and_table_and_reuses_real_features(backbone, evaluator_dirs, tmp_path):
    data = write_synthetic(tmp_path / "faces", n=8, size=64, seed=0)
    flux = save_flux(backbone, tmp_path / "flux")
    overrides = [
        f"backbone.path={flux}",
        f"run_dir={tmp_path / 'run'}",
        f"data.root={data}",
        "data.split.protocol=fraction",
        "data.split.test_fraction=0.5",
    ]
    config = load_config(overrides=overrides)
    export_run(config.run_dir, config, build_module(config).denoiser)
    clip_dir, parser_dir = evaluator_dirs
    argv = [
        *("--run", config.run_dir, "--split", "test", "--n", "3", "--modes", "mask,text+mask"),
        *("--steps", "2", "--batch-size", "2", "--clip", str(clip_dir), "--parser", str(parser_dir)),
        *("--cache-dir", str(tmp_path / "cache"), "--device", "cpu"),
    ]
    first = evaluate.main(argv)
    assert len(list((tmp_path / "cache").glob("real_*.pt"))) == 1  # beside digests.json, the models' sha256
    second = evaluate.main(argv)  # real features from the cache
    report = json.loads((tmp_path / "run" / "eval" / "test.json").read_text())
    for mode in ("mask", "text+mask"):
        for key in ("fid", "kid", "cmmd", "clip_score", "mask_miou", "pixel_acc"):
            assert report[mode][key] == pytest.approx(first[mode][key], nan_ok=True)
            assert second[mode][key] == pytest.approx(first[mode][key], rel=1e-6, nan_ok=True)
        assert report[mode]["n"] == 3 and 0 <= report[mode]["mask_miou"] <= 1
    table = (tmp_path / "run" / "eval" / "test.md").read_text()
    assert "| text+mask |" in table and "CMMD" in table and "Mask mIoU" in table


def test_evaluate_records_how_the_text_mode_was_conditioned(backbone, evaluator_dirs, tmp_path):
    data = write_synthetic(tmp_path / "faces", n=4, size=64, seed=0)
    flux = save_flux(backbone, tmp_path / "flux")
    overrides = [f"backbone.path={flux}", f"run_dir={tmp_path / 'run'}", f"data.root={data}"]
    config = load_config(
        overrides=[*overrides, "data.split.protocol=fraction", "data.split.test_fraction=0.5"]
    )
    assert config.train.sample.text_only_condition == "background"  # the run's default, overridden below
    export_run(config.run_dir, config, build_module(config).denoiser)
    clip_dir, parser_dir = evaluator_dirs
    argv = [
        *("--run", config.run_dir, "--split", "test", "--n", "2", "--modes", "text"),
        *("--steps", "1", "--batch-size", "2", "--clip", str(clip_dir), "--parser", str(parser_dir)),
        *("--cache-dir", "", "--device", "cpu", "--text-only-condition", "none"),
    ]
    evaluate.main(argv)
    meta = json.loads((tmp_path / "run" / "eval" / "test.json").read_text())["meta"]
    assert meta["text_only_condition"] == meta["sample"]["text_only_condition"] == "none"
    table = (tmp_path / "run" / "eval" / "test.md").read_text()
    assert "| text (no condition tokens) |" in table and "`text_only_condition: none`" in table


def test_evaluate_rejects_unknown_modes(tmp_path):
    with pytest.raises(ValueError, match="--modes"):
        evaluate.main(["--run", str(tmp_path), "--modes", "text,sketch"])


def test_evaluate_with_the_paper_protocol_writes_table_1_and_a_protocol_record(
    backbone, evaluator_dirs, paper_standins, tmp_path
):
    data = write_synthetic(tmp_path / "faces", n=8, size=64, seed=0)
    overrides = [f"backbone.path={save_flux(backbone, tmp_path / 'flux')}", f"run_dir={tmp_path / 'run'}"]
    config = load_config(
        overrides=[
            *overrides,
            f"data.root={data}",
            "data.split.protocol=fraction",
            "data.split.test_fraction=0.5",
        ]
    )
    export_run(config.run_dir, config, build_module(config).denoiser)
    clip_dir, parser_dir = evaluator_dirs
    argv = [
        *("--run", config.run_dir, "--split", "test", "--n", "3", "--modes", "text,mask,text+mask"),
        *("--steps", "1", "--batch-size", "2", "--clip", str(clip_dir), "--parser", str(parser_dir)),
        *("--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--protocol", "paper"),
        *("--inception-torchscript", str(paper_standins / "inception-2015-12-05.pt")),
        *("--cmmd-clip", str(clip_dir), "--text-clip", str(clip_dir), "--dino", str(paper_standins / "dino")),
        *("--image-reward", str(paper_standins / "image_reward"), "--dino-splice"),
    ]
    first = evaluate.main(argv)
    second = evaluate.main(argv)  # the paper's real features from the cache
    report = json.loads((tmp_path / "run" / "eval" / "test.json").read_text())
    columns = {
        "fid",
        "kid",
        "cmmd",
        "mask",
        "mask_per_image",
        "mask_splice_per_image",
        "text",
        "image_reward",
    }
    for mode in ("text", "mask", "text+mask"):
        assert set(report[mode]["paper"]) == columns
        for key, value in first[mode]["paper"].items():
            assert second[mode]["paper"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), (mode, key)
        assert set(report[mode]["iou"]) <= set(PARTS)
    protocol = report["protocol"]
    assert protocol["protocol"] == "paper" and protocol["images"] == 3 and len(protocol["ids"]) == 3
    assert protocol["sample"]["steps"] == 1 and protocol["seed"] == 0 and protocol["resolution"] == 64
    assert len(protocol["commit"]) == 40 and isinstance(protocol["dirty"], bool)
    dino_files = protocol["models"]["paper/dino"]["files"]
    assert set(dino_files) == {"config.json", "model.safetensors"} and all(
        len(h) == 64 for h in dino_files.values()
    )
    assert protocol["models"]["paper/inception"]["files"]["inception-2015-12-05.pt"] == sha256(
        paper_standins / "inception-2015-12-05.pt"
    )
    assert (
        "299x299" in protocol["preprocessing"]["fid_kid"] and "no resize" in protocol["preprocessing"]["mask"]
    )
    table = (tmp_path / "run" / "eval" / "test.md").read_text()
    assert "| Mode | FID ↓ | KID ×10³ ↓ | CMMD ↓ | Mask ↓ | Text ↑ | IR ↑ |" in table
    assert "| mask |" in table and "## Parser IoU per part" in table


def test_the_paper_protocol_without_its_models_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="protocol 'paper' needs at least one of the paper's models"):
        evaluate.main(["--run", str(tmp_path), "--protocol", "paper"])


def test_evaluate_n_beyond_the_split_is_an_error_not_fewer_faces(backbone, tmp_path):
    data = write_synthetic(tmp_path / "faces", n=8, size=64, seed=0)
    flux = save_flux(backbone, tmp_path / "flux")
    overrides = [f"backbone.path={flux}", f"run_dir={tmp_path / 'run'}", f"data.root={data}"]
    overrides += ["data.split.protocol=fraction", "data.split.test_fraction=0.5"]
    config = load_config(overrides=overrides)
    export_run(config.run_dir, config, build_module(config).denoiser)
    argv = ["--run", config.run_dir, "--n", "10", "--modes", "mask", "--cache-dir", "", "--device", "cpu"]
    with pytest.raises(ValueError, match=r"--n 10 is more than the 4 faces of the test split"):
        evaluate.main(argv)


def test_a_truncated_evaluator_weights_file_is_an_error_naming_it(evaluators, tmp_path):
    import shutil

    for name, load in (("clip", load_clip), ("parser", load_face_parser)):
        folder = shutil.copytree(evaluators / name, tmp_path / name)
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-1000])
        with pytest.raises(ValueError, match=rf"{name}/model.safetensors is not a complete safetensors file"):
            load(folder)


def test_the_paper_table_carries_the_papers_rows_for_each_mode_and_names_the_source():
    results = {
        "text+mask": {"paper": {"fid": 30.0, "kid": 12.0}},
        "mask": {"paper": {"fid": 25.0, "kid": 9.0}},
        "text": {"paper": {"fid": 40.0, "kid": 20.0}},
    }
    table = paper_table(results, {})
    lines = table.splitlines()
    ours = lines.index("| text+mask | 30.00 | 12.00 |")
    assert lines[ours + 1] == "| text+mask: the paper's Face-MoGLE | 22.24 | 10.87 |"
    assert "| mask: the paper's Face-MoGLE | 19.63 | 8.29 |" in lines
    assert "| text: the paper's Face-MoGLE | 34.81 | 21.85 |" in lines
    assert (
        PAPER_SOURCE in table
        and all(f"- {d}" in lines for d in PAPER_DIFFERENCES)
        and len(PAPER_DIFFERENCES) == 4
    )
