"""Fixtures several test modules share: the tiny FLUX and its inputs, and, built once per session, a run
workspace (synthetic faces, a saved tiny FLUX, their latent caches), untrained small evaluators and the
paper protocol's stand-ins."""

from pathlib import Path

import pytest
import torch

from facemogle.encode import TextEmbeddings
from facemogle.evaluators.standins import write_standins
from facemogle.packing import image_ids
from facemogle.tiny_backbone import TinyFluxConfig, tiny_flux
from tests.run_fixtures import write_evaluators, write_workspace


@pytest.fixture
def backbone():
    """The tiny FLUX in float32: 64^2 images -> 64 tokens of width 64."""
    return tiny_flux(TinyFluxConfig(), seed=0)


@pytest.fixture
def flux_inputs():
    """Random transformer inputs for the tiny config: batch 2, 64 image tokens, 32 text tokens."""
    g = torch.Generator().manual_seed(0)
    return {
        "hidden_states": torch.randn(2, 64, 64, generator=g),
        "encoder_hidden_states": torch.randn(2, 32, 64, generator=g),
        "pooled_projections": torch.randn(2, 64, generator=g),
        "timestep": torch.rand(2, generator=g),
        "img_ids": image_ids(16, 16),
        "txt_ids": torch.zeros(32, 3),
    }


@pytest.fixture
def text(flux_inputs):
    return TextEmbeddings(flux_inputs["encoder_hidden_states"], flux_inputs["pooled_projections"])


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """data/: 24 synthetic faces at 32^2; flux/: a saved tiny FLUX (seed 0); cache/: latent caches, built by
    the first run that needs each. Shared by every module: runs write their own directories elsewhere."""
    return write_workspace(tmp_path_factory.mktemp("workspace"))


@pytest.fixture(scope="session")
def evaluators(tmp_path_factory) -> Path:
    """clip/ and parser/: untrained small evaluator models, saved as `make evaluators` saves trained ones."""
    return write_evaluators(tmp_path_factory.mktemp("evaluators"))


@pytest.fixture(scope="session")
def paper_standins(tmp_path_factory) -> Path:
    """dino/, inception-2015-12-05.pt and image_reward/: the paper protocol's stand-ins for 64^2 faces, as
    `make evaluators` writes them."""
    return write_standins(tmp_path_factory.mktemp("paper_standins"), image_size=64)
