"""A step's peak activations, traced by torch's MemTracker under FakeTensorMode at full width with a few
blocks and extrapolated to the real block count, allocating nothing (facemogle.memory_plan)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from diffusers import FluxTransformer2DModel
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType, _ModState

from facemogle.denoiser import Denoiser, flow_matching_loss
from facemogle.encode import TextEmbeddings
from facemogle.lora import add_lora
from facemogle.memory_sizes import BASE, Architecture, MemorySettings, memo
from facemogle.memory_weights import meta_models
from facemogle.mogle import MoGLE
from facemogle.packing import image_ids


class FrozenAwareTracker(MemTracker):
    """MemTracker that registers its gradient hooks on trainable parameters only: a frozen parameter
    (requires_grad False) refuses `register_hook`."""

    def _track_module_params_and_buffers(self, module: nn.Module, install_grad_hooks: bool = True):
        found = super()._track_module_params_and_buffers(module, install_grad_hooks=False)
        if install_grad_hooks:
            for p in module.parameters():
                if p.requires_grad and self._param_to_grad_hook_handles.get(p, None) is None:
                    self._param_to_grad_hook_handles[p] = (
                        p.register_hook(self._track_grad),
                        p.register_post_accumulate_grad_hook(lambda q: self._track_grad(q.grad)),
                    )
        return found

    def _track_grad(self, grad: torch.Tensor) -> None:
        self._update_and_maybe_create_winfos(grad, _MemRefType.GRAD)


def step_peak(tracker: MemTracker) -> dict[str, int]:
    """The tracker's peak snapshot of the one device the step ran on, by kind (_MemRefType values)."""
    return _by_kind(tracker.get_tracker_snapshot("peak"))


def dynamic_bytes(peak: dict[str, int]) -> int:
    """What the step allocated, at its peak: everything but the parameters, buffers, gradients and optimizer
    state, which are counted exactly elsewhere."""
    return sum(peak.get(k, 0) for k in ("Activation", "Temp", "Other"))


def fake_denoiser(arch: Architecture, s: MemorySettings, mode: FakeTensorMode, blocks: tuple[int, int]):
    """The real Denoiser (FLUX with LoRA and MoGLE) at full width with `blocks` (double, single) blocks, its
    tensors fake: built on the meta device, then given fake CPU storage (peft's `.to` cannot swap fake
    parameters in)."""
    config = {**arch.transformer, "num_layers": blocks[0], "num_single_layers": blocks[1]}
    with torch.device("meta"):
        transformer = FluxTransformer2DModel.from_config(config)
        transformer.requires_grad_(False)
        if s.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        add_lora(transformer, s.lora)
        transformer.to(s.frozen_dtype)
        denoiser = Denoiser(transformer, MoGLE(s.mogle).to(s.trainable_dtype), s.condition)
    return fake_storage(denoiser, mode, s)


def fake_storage(module: nn.Module, mode: FakeTensorMode, s: MemorySettings) -> nn.Module:
    with mode:
        for m in module.modules():
            for name, p in m._parameters.items():
                if p is not None:
                    dtype = s.trainable_dtype if p.requires_grad else s.frozen_dtype
                    m._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=dtype), p.requires_grad)
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = torch.zeros(b.shape, dtype=b.dtype)
    return module


def trace_text_encoding(arch: Architecture, s: MemorySettings) -> dict[str, int]:
    """MemTracker's peak, by kind, of encoding a batch of captions with T5 and CLIP (facemogle.encode), as a
    training step with data.cache_text false does before the transformer runs."""
    mode = FakeTensorMode()
    with torch.device("meta"):
        models = meta_models(arch)
    t5, clip = (
        fake_storage(models[n].requires_grad_(False), mode, s) for n in ("text_encoder_2", "text_encoder")
    )
    with mode:
        tracker = FrozenAwareTracker()
        tracker.track_external(t5, clip)
        with tracker, torch.no_grad():
            n_clip = arch.text_encoder["max_position_embeddings"]
            clip(torch.zeros(s.batch, n_clip, dtype=torch.long), output_hidden_states=False)
            t5(torch.zeros(s.batch, s.max_sequence_length, dtype=torch.long))
        return step_peak(tracker)


@dataclass(frozen=True)
class Trace:
    """What one traced step allocated besides weights, gradients and optimizer state: its peak, the peak once
    the blocks have run, and the bytes each double and each single block leaves behind in the forward (its
    saved activations, or under checkpointing only its output, which the next block saves)."""

    peak: int
    after_blocks_peak: int  # the peak while every block's leavings are alive (0 in a step without gradients)
    per_double: int
    per_single: int


def trace_step(arch: Architecture, s: MemorySettings, blocks: tuple[int, int], train: bool) -> Trace:
    """MemTracker's view of one training step (forward + backward of the flow-matching loss) or one sampling
    step (a forward without gradients), at full width with `blocks` blocks, allocating nothing."""
    mode = FakeTensorMode()
    denoiser = fake_denoiser(arch, s, mode, blocks)
    c, b, l = arch.transformer, s.batch, arch.image_tokens(s.resolution)
    side = s.resolution // arch.vae_scale_factor
    dtype = s.frozen_dtype
    double = list(denoiser.transformer.transformer_blocks)
    single = list(denoiser.transformer.single_transformer_blocks)
    with mode:
        tracker = FrozenAwareTracker()
        tracker.track_external(denoiser)
        entered = {block: _record_entry(block, tracker) for block in double + single}
        with tracker, torch.set_grad_enabled(train):
            x0 = torch.randn(b, l, c["in_channels"], dtype=dtype)  # (b, l, d)
            noise = torch.randn(b, l, c["in_channels"], dtype=dtype)
            cond = torch.randn(b, 20, l, c["in_channels"], dtype=dtype)  # (b, 20, l, d)
            text = TextEmbeddings(
                torch.randn(b, s.max_sequence_length, c["joint_attention_dim"], dtype=dtype),  # (b, s, D)
                torch.randn(b, c["pooled_projection_dim"], dtype=dtype),  # (b, P)
            )
            t = torch.rand(b)
            guidance = 1.0 if c.get("guidance_embeds") else None
            loss, _ = flow_matching_loss(denoiser, x0, noise, t, text, image_ids(side, side), cond, guidance)
            if train:
                loss.backward()
        # the blocks run through `forward_streams`, so the tracker sees their layers, not the blocks; the output
        # layers' backward runs with every block's leavings alive too
        tr = denoiser.transformer
        after = [*double, *single, tr.norm_out, tr.proj_out]
        layers = [m for block in after for m in block.modules() if m in tracker.memory_tracking]
        backward = [
            dynamic_bytes(_by_kind(snapshot))
            for m in layers
            for snapshot in tracker.memory_tracking[m].snapshots.get(_ModState.PEAK_BW, [])
        ]
        peak = dynamic_bytes(step_peak(tracker))
        before_blocks = entered[double[0]][0][1] if double else 0
        return Trace(
            peak=peak,
            # a peak reached after the first block was entered has every block's leavings alive
            after_blocks_peak=max(max(backward, default=0), peak if peak > before_blocks else 0),
            per_double=_left_behind([entered[m] for m in double]),
            per_single=_left_behind([entered[m] for m in single]),
        )


def _by_kind(snapshot: dict) -> dict[str, int]:
    """A tracker snapshot of the one device the step ran on, by kind (_MemRefType values)."""
    (by_kind,) = snapshot.values()
    return {str(getattr(k, "value", k)): v for k, v in by_kind.items()}


def _record_entry(block: nn.Module, tracker: MemTracker) -> list[tuple[int, int]]:
    """The step's dynamic bytes, now and at their peak so far, each time `block` is entered (its forward
    first, then any recomputation)."""
    entries, forward = [], block.forward_streams

    def entering(*args):
        now, peak = (dynamic_bytes(_by_kind(tracker.get_tracker_snapshot(k))) for k in ("current", "peak"))
        entries.append((now, peak))
        return forward(*args)

    block.forward_streams = entering
    return entries


def _left_behind(entries: list[list[tuple[int, int]]]) -> int:
    """How much more the step holds entering the last block of a kind than the one before (0 for one)."""
    if len(entries) < 2:
        return 0
    return max(0, entries[-1][0][0] - entries[-2][0][0])


def extrapolated(arch: Architecture, s: MemorySettings, train: bool) -> int:
    """Peak activations at the real block counts from one trace with at most BASE blocks of each kind: every
    block beyond it adds what one block leaves behind to the peak reached once the blocks ran, which is where
    a deep transformer's step peaks; the step's own peak elsewhere (MoGLE, the loss) stays as traced."""
    n_double, n_single = arch.transformer["num_layers"], arch.transformer["num_single_layers"]
    traced = (min(n_double, BASE[0]), min(n_single, BASE[1]))
    found = trace_step(arch, s, traced, train)
    more = (n_double - traced[0]) * found.per_double + (n_single - traced[1]) * found.per_single
    if more == 0:
        return found.peak
    return max(found.peak, found.after_blocks_peak + more)


def traced_activations(arch: Architecture, s: MemorySettings, train: bool) -> int:
    """The step's peak activations (module docstring). Quantisation, the optimizer and the text path do not
    change them, so they share one trace."""
    base = replace(
        s,
        transformer_quantization="none",
        text_encoder_2_quantization="none",
        optimizer="adamw",
        text_path="encoded",
        gradient_checkpointing=s.gradient_checkpointing and train,
    )
    found = memo(("activations", repr(arch), repr(base), train), lambda: extrapolated(arch, base, train))
    # training encodes captions on the accelerator only without the cache; sampling encodes its prompts there
    # wherever T5 is on it
    if s.text_path == "cpu" or (train and s.text_path == "cached"):
        return found
    text = memo(
        ("text", repr(arch), s.batch, s.max_sequence_length, s.frozen_dtype),
        lambda: trace_text_encoding(arch, s),
    )
    return max(found, dynamic_bytes(text))
