import pytest
import torch

from facemogle.backbone import TinyFluxConfig, tiny_flux
from facemogle.encode import TextEmbeddings
from facemogle.packing import image_ids


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
