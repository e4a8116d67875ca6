"""Today's images: the sampler and the sample command against the outputs recorded before the pipeline and
the experts-once sampler (tests/golden_samples.py)."""

import pytest
import torch
from safetensors.torch import load_file

from tests.golden_samples import CASES, CLI_CASES, GOLDEN, export_tiny_run, run_case, run_cli_case


@pytest.fixture(scope="module")
def golden():
    return load_file(GOLDEN)


@pytest.mark.parametrize("name", CASES)
def test_the_sampler_reproduces_the_recorded_images_and_gate(golden, name):
    out = run_case(name)
    torch.testing.assert_close(out.images, golden[f"{name}/images"], atol=1e-5, rtol=0)
    if f"{name}/gate_last" in golden:
        torch.testing.assert_close(out.gate_weights[-1], golden[f"{name}/gate_last"], atol=1e-6, rtol=0)


def test_the_sample_command_writes_the_recorded_images(golden, tmp_path):
    export_tiny_run(tmp_path)
    for name in CLI_CASES:
        images = run_cli_case(name, tmp_path, tmp_path / "out" / name)
        recorded = {k.split("/")[-1]: v for k, v in golden.items() if k.startswith(f"cli/{name}/")}
        assert images.keys() == recorded.keys()
        for stem, image in images.items():
            # one uint8 level: the float images above agree to 1e-5, which can round either way on another CPU
            torch.testing.assert_close(image.int(), recorded[stem].int(), atol=1, rtol=0, msg=stem)
