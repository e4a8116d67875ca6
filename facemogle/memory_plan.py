"""Predicted peak accelerator memory of one training step and one sampling step, without allocating the model.

    weights      every frozen parameter and buffer held on the device, counted exactly from the models built
                 on the meta device, at the bytes per weight of its dtype or quantisation (QUANT_BYTES), plus
                 the trainable LoRA and MoGLE parameters
    gradients    one gradient per trainable parameter (they persist across gradient-accumulation micro-batches)
    optimizer    the optimizer's state per trainable parameter (OPTIMIZER_STATES)
    activations  what the step itself allocates at its peak (saved activations, recomputation, temporaries,
                 the batch): torch's MemTracker following the real Denoiser's forward and backward under
                 FakeTensorMode, so nothing is allocated

Tracing FLUX.1-dev whole (57 blocks) takes minutes, and its blocks repeat, so the transformer is traced once at
full width with 2 double and 2 single blocks. The blocks entered one after the other show what each leaves
behind (its saved activations, or under gradient checkpointing its output alone); a deep transformer's step
peaks inside the blocks' backward, with every block's leavings alive, so each block beyond the traced ones
adds its leavings to that peak (19 and 38 blocks for FLUX.1-dev).

Not counted: the CUDA context and allocator fragmentation (typically 0.5-1.5 GiB on top), the VAE decoding at
the end of sampling, and the T5 encoding's own activations (freed before the transformer runs, and far below
its peak).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from diffusers import AutoencoderKL, FluxTransformer2DModel
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType, _ModState
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from facemogle.denoiser import Denoiser, flow_matching_loss
from facemogle.encode import TextEmbeddings
from facemogle.flux_forward import ConditionSettings
from facemogle.lora import LoRASettings, add_lora
from facemogle.mogle import MoGLE, MoGLEConfig
from facemogle.packing import image_ids

GiB = 2**30
QUANTIZATIONS = ("none", "int8", "nf4", "fp8")
OPTIMIZERS = ("adamw", "prodigy", "adamw8bit")
# Where T5 is and when it runs: on the accelerator encoding each step's captions (data.cache_text false); on the
# accelerator with the captions' embeddings cached; in host memory (backbone.t5_on_cpu)
TEXT_PATHS = ("encoded", "cached", "cpu")
DTYPE_BYTES = {torch.float32: 4, torch.bfloat16: 2, torch.float16: 2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Bytes per quantised nn.Linear weight, and per output row or per tensor on top: bitsandbytes LLM.int8 keeps a
# float32 scale per row; NF4 an absmax per block of 64 (float32; double quantisation would make it ~8 bits);
# fp8 one float32 scale per tensor.
QUANT_BYTES = {"int8": 1.0, "nf4": 0.5 + 4 / 64, "fp8": 1.0}
# Optimizer state tensors per trainable parameter, each the parameter's size and dtype: AdamW's two moments,
# Prodigy's two moments, s and p0 (prodigyopt). AdamW8bit (bitsandbytes): two 8-bit moments plus a float32
# absmax per block of 256 for tensors of at least 4096 elements, two float32 moments for smaller ones.
OPTIMIZER_STATES = {"adamw": 2, "prodigy": 4}
BNB_MIN_8BIT_SIZE, BNB_BLOCK = 4096, 256
# (double, single) blocks traced: the last two of each kind show what one block leaves behind for the next
# (the first double block leaves less than the rest: its input was made before it)
BASE = (3, 2)

# FLUX.1-dev's configs (black-forest-labs/FLUX.1-dev, the config.json of each folder, sizes only).
FLUX_DEV_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": [16, 56, 56],
}
FLUX_DEV_T5 = {
    "vocab_size": 32128,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "feed_forward_proj": "gated-gelu",
}
FLUX_DEV_CLIP = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
}
FLUX_DEV_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "latent_channels": 16,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}


@dataclass(frozen=True)
class Architecture:
    """The backbone's sizes: each folder's config.json (FluxTransformer2DModel, T5, CLIP, AutoencoderKL)."""

    transformer: dict = field(default_factory=lambda: dict(FLUX_DEV_TRANSFORMER))
    text_encoder_2: dict = field(default_factory=lambda: dict(FLUX_DEV_T5))
    text_encoder: dict = field(default_factory=lambda: dict(FLUX_DEV_CLIP))
    vae: dict = field(default_factory=lambda: dict(FLUX_DEV_VAE))

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae["block_out_channels"]) - 1)

    def image_tokens(self, resolution: int) -> int:
        side = resolution // self.vae_scale_factor // 2  # 2x2 latent patches per token
        return side * side


@dataclass
class MemorySettings:
    """Everything the peak depends on besides the architecture. precision is Lightning's: a `-true` half
    precision casts the whole module (backbone included) to it; otherwise the backbone keeps `dtype` and the
    trainable weights are float32."""

    batch: int = 1
    resolution: int = 512
    precision: str = "bf16-true"
    dtype: str = "bfloat16"
    gradient_checkpointing: bool = True
    transformer_quantization: str = "none"
    text_encoder_2_quantization: str = "none"
    optimizer: str = "prodigy"
    text_path: str = "encoded"
    max_sequence_length: int = 512
    lora: LoRASettings = field(default_factory=LoRASettings)
    mogle: MoGLEConfig = field(default_factory=MoGLEConfig)
    condition: ConditionSettings = field(default_factory=ConditionSettings)

    def __post_init__(self) -> None:
        for key, value, allowed in (
            ("transformer_quantization", self.transformer_quantization, QUANTIZATIONS),
            ("text_encoder_2_quantization", self.text_encoder_2_quantization, QUANTIZATIONS),
            ("optimizer", self.optimizer, OPTIMIZERS),
            ("text_path", self.text_path, TEXT_PATHS),
            ("dtype", self.dtype, tuple(DTYPES)),
        ):
            if value not in allowed:
                raise ValueError(f"{key}={value!r}: expected one of {allowed}")
        if self.batch < 1 or self.resolution < 1:
            raise ValueError(f"batch={self.batch} and resolution={self.resolution} must be >= 1")

    @property
    def frozen_dtype(self) -> torch.dtype:
        return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(self.precision, DTYPES[self.dtype])

    @property
    def trainable_dtype(self) -> torch.dtype:
        return {"bf16-true": torch.bfloat16, "16-true": torch.float16}.get(self.precision, torch.float32)

    def describe(self) -> str:
        quant = f"transformer {self.transformer_quantization}, T5 {self.text_encoder_2_quantization}"
        return (
            f"batch {self.batch}, {self.resolution}^2, {self.precision}, {quant}, "
            f"checkpointing {'on' if self.gradient_checkpointing else 'off'}, {self.optimizer}, "
            f"text {self.text_path}"
        )


@dataclass(frozen=True)
class StepMemory:
    """Predicted bytes of one step at its peak, by kind."""

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def describe(self) -> str:
        parts = ("weights", "gradients", "optimizer", "activations")
        split = ", ".join(f"{p} {getattr(self, p) / GiB:.2f}" for p in parts)
        return f"{self.total / GiB:.2f} GiB ({split})"


@dataclass(frozen=True)
class MemoryPlan:
    training: StepMemory
    sampling: StepMemory
    settings: MemorySettings


def plan_memory(arch: Architecture, s: MemorySettings) -> MemoryPlan:
    frozen = frozen_weight_bytes(arch, s)
    trainable = trainable_numels(arch, s)
    width = DTYPE_BYTES[s.trainable_dtype]
    params = sum(trainable) * width
    grads = sum(trainable) * width
    transient = dequantized_transient(arch, s)
    training = StepMemory(
        weights=frozen + params,
        gradients=grads,
        optimizer=optimizer_bytes(trainable, width, s.optimizer),
        activations=traced_activations(arch, s, train=True) + transient,
    )
    sampling = StepMemory(
        weights=frozen + params,
        gradients=0,
        optimizer=0,
        activations=traced_activations(arch, s, train=False) + transient,
    )
    return MemoryPlan(training, sampling, s)


# --- weights -------------------------------------------------------------------------------------------------


def meta_models(arch: Architecture) -> dict[str, nn.Module]:
    """The backbone's four models on the meta device: their parameters have shapes and no storage."""
    with torch.device("meta"):
        return {
            "transformer": FluxTransformer2DModel.from_config(arch.transformer),
            "text_encoder_2": T5EncoderModel(T5Config(**arch.text_encoder_2)),
            "text_encoder": CLIPTextModel(CLIPTextConfig(**arch.text_encoder)),
            "vae": AutoencoderKL.from_config(arch.vae),
        }


def module_bytes(module: nn.Module, dtype: torch.dtype, quantization: str) -> int:
    """Bytes of the module's parameters and buffers in dtype, its nn.Linear weights quantised; a tied weight
    (T5's shared embedding) once."""
    total, width, seen = 0, DTYPE_BYTES[dtype], set()
    for m in module.modules():
        for name, p in m.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if quantization != "none" and isinstance(m, nn.Linear) and name == "weight":
                rows = m.out_features if quantization == "int8" else 1 if quantization == "fp8" else 0
                total += int(p.numel() * QUANT_BYTES[quantization]) + 4 * rows
            else:
                total += p.numel() * width
        total += sum(b.numel() * b.element_size() for b in m.buffers(recurse=False))
    return total


def frozen_weight_bytes(arch: Architecture, s: MemorySettings) -> int:
    """Transformer, CLIP and VAE always (the LightningModule holds them), T5 when the text path has it on the
    device."""
    key = (
        "frozen",
        repr(arch),
        s.frozen_dtype,
        s.transformer_quantization,
        s.text_encoder_2_quantization,
        s.text_path,
    )

    def count() -> int:
        models = meta_models(arch)
        total = module_bytes(models["transformer"], s.frozen_dtype, s.transformer_quantization)
        for name in ("text_encoder", "vae"):
            total += module_bytes(models[name], s.frozen_dtype, "none")
        if s.text_path != "cpu":
            total += module_bytes(models["text_encoder_2"], s.frozen_dtype, s.text_encoder_2_quantization)
        return total

    return _memo(key, count)


def trainable_numels(arch: Architecture, s: MemorySettings) -> tuple[int, ...]:
    """The element count of every trainable tensor: LoRA's A and B of each targeted layer, MoGLE's."""

    def count() -> tuple[int, ...]:
        with torch.device("meta"):
            transformer = FluxTransformer2DModel.from_config(arch.transformer)
            transformer.requires_grad_(False)
            add_lora(transformer, s.lora)
            lora = [p.numel() for p in transformer.parameters() if p.requires_grad]
            return (*lora, *(p.numel() for p in MoGLE(s.mogle).parameters()))

    return _memo(("trainable", repr(arch), repr(s.lora), repr(s.mogle)), count)


_MEMO: dict[tuple, object] = {}


def _memo(key: tuple, compute):
    """Counting and tracing depend only on their key's settings; the table and the search of what fits ask
    for the same ones many times."""
    if key not in _MEMO:
        _MEMO[key] = compute()
    return _MEMO[key]


def optimizer_bytes(numels: tuple[int, ...], width: int, optimizer: str) -> int:
    if optimizer == "adamw8bit":
        return sum(
            2 * n + 2 * 4 * -(-n // BNB_BLOCK) if n >= BNB_MIN_8BIT_SIZE else 2 * 4 * n for n in numels
        )
    return sum(OPTIMIZER_STATES[optimizer] * n * width for n in numels)


def dequantized_transient(arch: Architecture, s: MemorySettings) -> int:
    """A quantised layer dequantises its weight for the matmul: the largest one, in the compute dtype."""
    if s.transformer_quantization == "none":
        return 0
    c = arch.transformer
    inner = c["attention_head_dim"] * c["num_attention_heads"]
    return inner * 4 * inner * DTYPE_BYTES[s.frozen_dtype]  # the feed-forward's (inner, 4 inner) weight


# --- activations ---------------------------------------------------------------------------------------------


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
    found = _memo(("activations", repr(arch), repr(base), train), lambda: extrapolated(arch, base, train))
    # training encodes captions on the accelerator only without the cache; sampling encodes its prompts there
    # wherever T5 is on it
    if s.text_path == "cpu" or (train and s.text_path == "cached"):
        return found
    text = _memo(
        ("text", repr(arch), s.batch, s.max_sequence_length, s.frozen_dtype),
        lambda: trace_text_encoding(arch, s),
    )
    return max(found, dynamic_bytes(text))


# --- what fits -----------------------------------------------------------------------------------------------


def candidates(s: MemorySettings) -> list[MemorySettings]:
    """Settings near `s`, in the order worth trying: the fewest changes first (checkpointing on, a smaller
    batch, a quantised base, the text embeddings cached, T5 in host memory, 8-bit AdamW)."""
    batches = sorted({s.batch, *(b for b in (4, 2, 1) if b < s.batch)}, reverse=True)
    found = []
    for quant in ("none", "int8", "nf4"):
        for text in dict.fromkeys([s.text_path, "cached", "cpu"]):
            for optimizer in dict.fromkeys([s.optimizer, "adamw8bit"]):
                for batch in batches:
                    for ckpt in dict.fromkeys([s.gradient_checkpointing, True]):
                        q = s.transformer_quantization if quant == "none" else quant
                        q5 = s.text_encoder_2_quantization if quant == "none" else quant
                        found.append(
                            replace(
                                s,
                                transformer_quantization=q,
                                text_encoder_2_quantization=q5,
                                text_path=text,
                                optimizer=optimizer,
                                batch=batch,
                                gradient_checkpointing=ckpt,
                            )
                        )
    unique = {repr(c): c for c in found}
    return sorted(unique.values(), key=lambda c: changes(s, c))


CHANGEABLE = (
    "gradient_checkpointing",
    "batch",
    "transformer_quantization",
    "text_encoder_2_quantization",
    "text_path",
    "optimizer",
)


def changes(a: MemorySettings, b: MemorySettings) -> tuple[int, int]:
    """How far b is from a: how many settings differ, then how much the batch shrank."""
    return (sum(getattr(a, k) != getattr(b, k) for k in CHANGEABLE), a.batch - b.batch)


def fitting(arch: Architecture, s: MemorySettings, free: int, limit: int = 3) -> list[MemoryPlan]:
    """Up to `limit` plans near `s` whose training step fits in `free` bytes, nearest first."""
    found = []
    for c in candidates(s):
        plan = plan_memory(arch, c)
        if plan.training.total <= free:
            found.append(plan)
            if len(found) == limit:
                break
    return found
