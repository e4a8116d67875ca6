import pytest

from experiments.config.load import load_config, to_yaml
from experiments.config.schema import PretrainConfig


def test_overrides_reach_the_typed_config():
    config = load_config(overrides=["model.mogle.gate=scalar", "trainer.max_steps=7", "model.lora.rank=8"])
    assert (
        config.model.mogle.gate == "scalar" and config.trainer.max_steps == 7 and config.model.lora.rank == 8
    )


def test_an_unknown_key_is_an_error_listing_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown config key 'trainer.maxsteps'; valid keys: .*max_steps"):
        load_config(overrides=["trainer.maxsteps=3"])


def test_an_unknown_key_in_a_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  mogle:\n    gates: none\n")
    with pytest.raises(ValueError, match=r"bad.yaml: unknown config key 'model.mogle.gates'"):
        load_config(path)


def test_a_bad_value_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match=r"'model.mogle.gate'.*topk"):
        load_config(overrides=["model.mogle.gate=topk"])


def test_the_resolved_config_round_trips_through_yaml(tmp_path):
    config = load_config(overrides=["model.condition.cond_timestep=shared", "seed=3"])
    (tmp_path / "c.yaml").write_text(to_yaml(config))
    assert load_config(tmp_path / "c.yaml") == config


def test_the_paper_config_encodes_captions_each_step_and_the_tiny_one_caches_their_embeddings():
    assert not load_config("experiments/configs/flux_mmcelebahq.yaml").data.cache_text
    assert load_config("experiments/configs/tiny.yaml").data.cache_text


def test_another_schema_checks_keys_against_its_own_dataclasses():
    config = load_config(overrides=["flux.steps=5", "logger.kind=csv"], schema=PretrainConfig)
    assert isinstance(config, PretrainConfig) and config.flux.steps == 5 and config.logger.kind == "csv"
    with pytest.raises(ValueError, match=r"unknown config key 'model'; valid keys: backbone, data, flux, "):
        load_config(overrides=["model.mogle.gate=scalar"], schema=PretrainConfig)


def test_a_config_file_reading_the_environment_is_an_error_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEMOGLE_TEST_SECRET", "s3cret")
    path = tmp_path / "leak.yaml"
    path.write_text("logger:\n  name: ${oc.env:FACEMOGLE_TEST_SECRET}\n")
    with pytest.raises(
        ValueError, match=r"leak.yaml: logger.name='\$\{oc.env:FACEMOGLE_TEST_SECRET\}' calls"
    ):
        load_config(path)
    with pytest.raises(ValueError, match=r"from the command line: logger.project=.*'oc.decode'"):
        load_config(overrides=["logger.project=${oc.decode:'1'}"])
    assert load_config(path, allow_resolvers=True).logger.name == "s3cret"  # the documented opt-in


def test_a_reference_to_another_key_still_resolves(tmp_path):
    path = tmp_path / "ref.yaml"
    path.write_text("run_dir: runs/x\nlogger:\n  name: ${run_dir}\n")
    assert load_config(path).logger.name == "runs/x"


def test_the_train_command_takes_the_resolver_opt_in_flag(capsys):
    from experiments import train

    with pytest.raises(SystemExit):
        train.main(["--help"])
    assert "--allow-resolvers" in capsys.readouterr().out


def test_a_command_line_key_error_blames_the_command_line_not_the_yaml_file():
    tiny = "experiments/configs/tiny.yaml"
    with pytest.raises(ValueError, match=r"^from the command line: unknown config key 'trainer.maxsteps'"):
        load_config(tiny, ["trainer.maxsteps=3"])
    with pytest.raises(
        ValueError, match=r"^from the command line: bad value for 'trainer.max_steps': Value 'abc'"
    ):
        load_config(tiny, ["trainer.max_steps=abc"])


def test_the_stage_1_config_given_to_training_names_the_command_it_is_for():
    with pytest.raises(ValueError) as wrong:
        load_config("experiments/configs/backbone_tiny.yaml")
    message = str(wrong.value)
    assert "None" not in message and "data/synthetic" in message
    assert message.startswith("experiments/configs/backbone_tiny.yaml: ")
    assert message.endswith("its keys are those of a config for python -m experiments.pretrain_backbone")
