"""The joint attention of text, image and condition tokens (OminiControl's scheme) as a diffusers attention
processor, and the per-stream linear layer it and the block forwards (facemogle.flux_forward) share: LoRA on
a stream only where that stream takes it (a peft-wrapped layer called for a LoRA-free stream runs its base
layer)."""

from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxAttention, FluxAttnProcessor
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


def linear(layer: nn.Module, x: torch.Tensor, lora: bool) -> torch.Tensor:
    """Apply `layer`, skipping its LoRA adapter when `lora` is False."""
    if lora or not isinstance(layer, BaseTunerLayer):
        return layer(x)
    return layer.get_base_layer()(x)


class ConditionAttnProcessor(FluxAttnProcessor):
    """FLUX joint attention over text, image and (optionally) condition tokens.

    Without `cond_hidden_states` and with `lora_main=True` it is the stock processor, so the stock
    transformer forward still works after `install_condition_forward`.
    """

    def __call__(
        self,
        attn: FluxAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        cond_hidden_states: torch.Tensor | None = None,
        lora_main: bool = True,
    ):
        # (tokens, uses the added text projections, LoRA on)
        streams = [(hidden_states, False, lora_main)]
        if encoder_hidden_states is not None:
            streams.insert(0, (encoder_hidden_states, True, lora_main))
        if cond_hidden_states is not None:
            streams.append((cond_hidden_states, False, True))

        qkv = [_project_qkv(attn, x, added, lora) for x, added, lora in streams]
        query, key, value = (torch.cat(parts, dim=1) for parts in zip(*qkv, strict=True))  # (b, L, heads, hd)
        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)
        out = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        out = out.flatten(2, 3).to(query.dtype)  # (b, L, inner)
        outs = list(out.split([x.shape[1] for x, _, _ in streams], dim=1))

        if attn.pre_only:  # single-stream block: no output projection here
            return tuple(outs) if cond_hidden_states is not None else outs[0]
        for i, (_, added, lora) in enumerate(streams):
            if added:
                outs[i] = linear(attn.to_add_out, outs[i].contiguous(), lora)
            else:
                outs[i] = attn.to_out[1](linear(attn.to_out[0], outs[i].contiguous(), lora))
        if encoder_hidden_states is not None:
            outs = [outs[1], outs[0], *outs[2:]]  # stock order: image first, then text
        return tuple(outs) if len(outs) > 1 else outs[0]


def _project_qkv(attn: FluxAttention, x: torch.Tensor, added: bool, lora: bool):
    if added:
        layers, norms = (
            (attn.add_q_proj, attn.add_k_proj, attn.add_v_proj),
            (attn.norm_added_q, attn.norm_added_k),
        )
    else:
        layers, norms = (attn.to_q, attn.to_k, attn.to_v), (attn.norm_q, attn.norm_k)
    q, k, v = (linear(layer, x, lora).unflatten(-1, (-1, attn.head_dim)) for layer in layers)
    return norms[0](q), norms[1](k), v


# --- block forwards ------------------------------------------------------------------------------
