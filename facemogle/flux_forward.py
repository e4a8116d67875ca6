"""FLUX forward with condition tokens in the joint attention (OminiControl's scheme).

Three token streams: text (t), image (x) and condition (c). Text and image follow the stock FLUX
blocks; condition tokens use the image stream's weights but their own adaLN modulation, computed from
a timestep embedding of t = 0 ("zero", the paper) or of the image's timestep ("shared", as FLUX
Kontext effectively does). All three attend jointly; with `cond_attention="self"` condition tokens
attend only to themselves.

LoRA acts per stream: on condition tokens always, on text and image tokens only with
`lora_on_image=True`. A peft-wrapped layer called for a LoRA-free stream runs its base layer.

The block forwards below re-implement `FluxTransformerBlock.forward` and
`FluxSingleTransformerBlock.forward` of diffusers 0.42 (pinned in pyproject.toml) with the extra
stream, float16's clipping included (the double block's text stream, the single block's tokens; the
condition tokens are clipped where the stream whose weights they use is); `tests/test_flux_forward.py`
checks they equal the stock model when there are no condition tokens, with a guidance embedding, and in
float16 where a block overflows. The joint attention itself lives in `ConditionAttnProcessor`, a diffusers
attention processor (facemogle/condition_attention.py).
`install_condition_forward` sets that processor; each block runs through its condition-aware forward as
a method (`forward_streams`), so that the block's work is one call on the block: FSDP gathers a block's
sharded weights around that call (facemogle/sharding.py), as it does around `forward`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_flux import (
    FluxSingleTransformerBlock,
    FluxTransformer2DModel,
    FluxTransformerBlock,
)
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn
from torch.utils.checkpoint import checkpoint

from facemogle.condition_attention import ConditionAttnProcessor, linear


@dataclass
class ConditionSettings:
    cond_timestep: Literal["zero", "shared"] = "zero"
    cond_attention: Literal["joint", "self"] = "joint"
    lora_on_image: bool = False

    def __post_init__(self) -> None:
        if self.cond_timestep not in ("zero", "shared"):
            raise ValueError(f"cond_timestep={self.cond_timestep!r}: expected 'zero' or 'shared'")
        if self.cond_attention not in ("joint", "self"):
            raise ValueError(f"cond_attention={self.cond_attention!r}: expected 'joint' or 'self'")


def _modulate(norm: nn.Module, x: torch.Tensor, temb: torch.Tensor, lora: bool, chunks: int):
    """adaLN: returns the normed, shifted and scaled x and the remaining modulation chunks."""
    shift, scale, *rest = linear(norm.linear, norm.silu(temb), lora).chunk(chunks, dim=1)
    return norm.norm(x) * (1 + scale[:, None]) + shift[:, None], rest


def _feed_forward(ff: nn.Module, x: torch.Tensor, lora: bool) -> torch.Tensor:
    act = ff.net[0]
    h = F.gelu(linear(act.proj, x, lora), approximate=act.approximate)
    for module in ff.net[1:]:  # dropout, output projection (and a final dropout where configured)
        h = linear(module, h, lora)
    return h


def _clip_float16(x: torch.Tensor) -> torch.Tensor:
    """An overflow becomes float16's largest finite value, as diffusers' FLUX blocks do."""
    return x.clip(-65504, 65504) if x.dtype == torch.float16 else x


def _residual_branches(norm2, ff, x, attn_out, chunks, lora):
    """Double-block tail: gated attention residual, then the modulated, gated feed-forward."""
    gate_msa, shift_mlp, scale_mlp, gate_mlp = chunks
    x = x + gate_msa.unsqueeze(1) * attn_out
    h = norm2(x) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    return x + gate_mlp.unsqueeze(1) * _feed_forward(ff, h, lora)


def double_block(
    block: FluxTransformerBlock, img, txt, cond, temb, cond_temb, rotary, mask, lora_main: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    # AdaLayerNormZero's chunks: shift, scale, gate (attention); shift, scale, gate (feed-forward).
    n_img, m_img = _modulate(block.norm1, img, temb, lora_main, 6)
    n_txt, m_txt = _modulate(block.norm1_context, txt, temb, lora_main, 6)
    if cond is None:
        a_img, a_txt = block.attn(n_img, n_txt, mask, rotary, lora_main=lora_main)
    else:
        n_cond, m_cond = _modulate(block.norm1, cond, cond_temb, True, 6)
        a_img, a_txt, a_cond = block.attn(
            n_img, n_txt, mask, rotary, cond_hidden_states=n_cond, lora_main=lora_main
        )
        cond = _residual_branches(block.norm2, block.ff, cond, a_cond, m_cond, True)
    img = _residual_branches(block.norm2, block.ff, img, a_img, m_img, lora_main)
    txt = _residual_branches(block.norm2_context, block.ff_context, txt, a_txt, m_txt, lora_main)
    return img, _clip_float16(txt), cond


def single_block(
    block: FluxSingleTransformerBlock, tokens, cond, temb, cond_temb, rotary, mask, lora_main: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """tokens: text and image tokens concatenated, (b, s + l, dim)."""

    def pre(x, emb, lora):
        normed, (gate,) = _modulate(block.norm, x, emb, lora, 3)
        return normed, block.act_mlp(linear(block.proj_mlp, normed, lora)), gate

    def post(x, attn_out, mlp, gate, lora):
        out = x + gate.unsqueeze(1) * linear(block.proj_out, torch.cat([attn_out, mlp], dim=2), lora)
        return _clip_float16(out)

    n_tok, mlp_tok, g_tok = pre(tokens, temb, lora_main)
    if cond is None:
        a_tok = block.attn(n_tok, None, mask, rotary, lora_main=lora_main)
    else:
        n_cond, mlp_cond, g_cond = pre(cond, cond_temb, True)
        a_tok, a_cond = block.attn(n_tok, None, mask, rotary, cond_hidden_states=n_cond, lora_main=lora_main)
        cond = post(cond, a_cond, mlp_cond, g_cond, True)
    return post(tokens, a_tok, mlp_tok, g_tok, lora_main), cond


class ConditionTransformerBlock(FluxTransformerBlock):
    """A double-stream block with `forward_streams` (`double_block`); weights and stock forward unchanged."""

    def forward_streams(self, img, txt, cond, temb, cond_temb, rotary, mask, lora_main: bool):
        return double_block(self, img, txt, cond, temb, cond_temb, rotary, mask, lora_main)


class ConditionSingleTransformerBlock(FluxSingleTransformerBlock):
    """A single-stream block with `forward_streams` (`single_block`); weights and stock forward unchanged."""

    def forward_streams(self, tokens, cond, temb, cond_temb, rotary, mask, lora_main: bool):
        return single_block(self, tokens, cond, temb, cond_temb, rotary, mask, lora_main)


def install_condition_forward(transformer: FluxTransformer2DModel) -> None:
    """Set the condition-aware attention processor and block classes."""
    transformer.set_attn_processor(ConditionAttnProcessor())
    condition_blocks(transformer)


def condition_blocks(transformer: FluxTransformer2DModel) -> None:
    """Give the stock blocks `forward_streams`: they change class in place, as torch.nn.utils.parametrize
    does (the same modules and weights, one method more). Blocks already converted are left alone."""
    for block in transformer.transformer_blocks:
        if type(block) is FluxTransformerBlock:
            block.__class__ = ConditionTransformerBlock
    for block in transformer.single_transformer_blocks:
        if type(block) is FluxSingleTransformerBlock:
            block.__class__ = ConditionSingleTransformerBlock


# --- the whole transformer -----------------------------------------------------------------------


def self_attention_mask(n_main: int, n_cond: int, device) -> torch.Tensor:
    """(L, L) boolean mask, True = may attend: condition queries see condition keys only."""
    mask = torch.ones(n_main + n_cond, n_main + n_cond, dtype=torch.bool, device=device)
    mask[n_main:, :n_main] = False
    return mask


# The pipeline's model CPU offload moves the transformer to the GPU when its forward runs: this is that forward.
@apply_forward_hook
def flux_forward(
    transformer: FluxTransformer2DModel,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    pooled_projections: torch.Tensor,
    timestep: torch.Tensor,
    img_ids: torch.Tensor,
    txt_ids: torch.Tensor,
    guidance: torch.Tensor | None = None,
    cond_tokens: torch.Tensor | None = None,
    cond_ids: torch.Tensor | None = None,
    settings: ConditionSettings | None = None,
) -> torch.Tensor:
    """Velocity prediction (b, l, c) of FLUX with optional condition tokens (b, n, c) at ids (n, 3).

    timestep and guidance as in diffusers' FluxTransformer2DModel.forward: t in [0, 1], guidance the
    raw scale; both are multiplied by 1000 before their embeddings.
    """
    settings = settings or ConditionSettings()
    tr, lora_main = transformer, settings.lora_on_image
    dtype = hidden_states.dtype
    img = linear(tr.x_embedder, hidden_states, lora_main)
    txt = linear(tr.context_embedder, encoder_hidden_states, lora_main)
    temb = _time_embedding(tr, timestep.to(dtype), guidance, pooled_projections)
    ids = [txt_ids, img_ids]

    cond = cond_temb = None
    if cond_tokens is not None:
        if cond_ids is None or cond_ids.shape[0] != cond_tokens.shape[1]:
            raise ValueError("cond_ids must give one (3,) position id per condition token")
        cond = linear(tr.x_embedder, cond_tokens, True)
        cond_temb = (
            temb
            if settings.cond_timestep == "shared"
            else _time_embedding(tr, torch.zeros_like(timestep, dtype=dtype), guidance, pooled_projections)
        )
        ids.append(cond_ids)
    rotary = tr.pos_embed(torch.cat(ids, dim=0))
    mask = None
    if cond is not None and settings.cond_attention == "self":
        mask = self_attention_mask(txt.shape[1] + img.shape[1], cond.shape[1], img.device)

    condition_blocks(tr)  # a bare transformer (backbone pretraining) gets `forward_streams` here
    run = _checkpointed if torch.is_grad_enabled() and tr.gradient_checkpointing else _direct
    for block in tr.transformer_blocks:
        img, txt, cond = run(block.forward_streams, img, txt, cond, temb, cond_temb, rotary, mask, lora_main)
    tokens = torch.cat([txt, img], dim=1)
    for block in tr.single_transformer_blocks:
        tokens, cond = run(block.forward_streams, tokens, cond, temb, cond_temb, rotary, mask, lora_main)
    img = tokens[:, txt.shape[1] :]

    shift_scale = linear(tr.norm_out.linear, tr.norm_out.silu(temb).to(img.dtype), lora_main)
    scale, shift = shift_scale.chunk(2, dim=1)
    img = tr.norm_out.norm(img) * (1 + scale)[:, None, :] + shift[:, None, :]
    return linear(tr.proj_out, img, lora_main)


def _time_embedding(tr: FluxTransformer2DModel, t, guidance, pooled):
    if guidance is None:
        return tr.time_text_embed(t * 1000, pooled)
    return tr.time_text_embed(t * 1000, guidance.to(t.dtype) * 1000, pooled)


def _direct(fn, *args):
    return fn(*args)


def _checkpointed(fn, *args):
    return checkpoint(fn, *args, use_reentrant=False)
