import pytest
import torch

from facemogle.denoiser import Denoiser, flow_matching_loss
from facemogle.lora import LoRASettings, add_lora, load_lora, save_lora
from facemogle.mogle import MoGLE


def test_optimizer_steps_change_only_lora_and_mogle_weights(backbone, flux_inputs, text):
    backbone.freeze()
    tr = backbone.transformer
    add_lora(tr, LoRASettings())
    denoiser = Denoiser(tr, MoGLE())
    frozen = {k: v.clone() for k, v in tr.state_dict().items() if "lora_" not in k}
    trainable = {k: v.clone() for k, v in denoiser.named_parameters() if v.requires_grad}
    assert trainable and all("lora_" in k or k.startswith("mogle.") for k in trainable)
    opt = torch.optim.AdamW([p for p in denoiser.parameters() if p.requires_grad], lr=1e-2)
    cond = torch.randn(2, 20, 64, 64)
    for _ in range(3):
        loss, _ = flow_matching_loss(
            denoiser,
            flux_inputs["hidden_states"],
            torch.randn(2, 64, 64),
            torch.rand(2),
            text,
            flux_inputs["img_ids"],
            cond,
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = tr.state_dict()
    for k, v in frozen.items():
        assert torch.equal(after[k], v), f"backbone weight {k} changed"
    changed = [
        k for k, p in denoiser.named_parameters() if p.requires_grad and not torch.equal(p, trainable[k])
    ]
    assert any(k.startswith("mogle.") for k in changed) and any("lora_B" in k for k in changed)


def test_saved_lora_keeps_its_alpha_and_reproduces_outputs(backbone, tmp_path):
    from facemogle.tiny_backbone import tiny_flux

    tr = backbone.transformer
    add_lora(tr, LoRASettings(rank=4, alpha=8))
    for name, p in tr.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    path = save_lora(tr, tmp_path)
    other = tiny_flux(seed=0).transformer
    load_lora(other, path)
    assert other.peft_config["mogle"].lora_alpha == 8 and other.peft_config["mogle"].r == 4
    x = {"hidden_states": torch.randn(1, 64, 64), "encoder_hidden_states": torch.randn(1, 32, 64)}
    common = {"pooled_projections": torch.randn(1, 64), "timestep": torch.tensor([0.5])}
    ids = {"img_ids": torch.zeros(64, 3), "txt_ids": torch.zeros(32, 3)}
    with torch.no_grad():
        torch.testing.assert_close(tr(**x, **common, **ids).sample, other(**x, **common, **ids).sample)


def test_lora_on_a_layer_the_forward_cannot_route_is_an_error(backbone):
    with pytest.raises(ValueError, match="time_text_embed"):
        add_lora(
            backbone.transformer, LoRASettings(target_modules=r"time_text_embed\.timestep_embedder\.linear_1")
        )


def test_lora_targets_that_match_nothing_are_an_error(backbone):
    with pytest.raises(ValueError, match="matched no layer"):
        add_lora(backbone.transformer, LoRASettings(target_modules=["no_such_layer"]))
