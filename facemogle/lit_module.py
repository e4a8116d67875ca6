"""The LightningModule: frozen FLUX backbone, trainable LoRA + MoGLE, rectified-flow loss.

It receives the built backbone and denoiser (experiments/training/build.py makes them from a config). Batches
come from data_modules in one of two forms:
    cached   image_latents (b, l, d), cond_latents (b, 20, l, d), and text_sequence (b, s, D),
             text_pooled (b, P) or, when the cache holds no text, caption list[str] (encoded every step)
    raw      image (b, 3, H, W), cond_maps (b, 20, 3, H, W), caption list[str] (encoded every step)
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import lightning as L
import torch
from prodigyopt import Prodigy
from torch.distributed.tensor import DTensor
from torch.optim.lr_scheduler import LambdaLR
from transformers import get_wsd_schedule

from facemogle.backbone import FluxBackbone
from facemogle.batch import CachedItem, FaceItem
from facemogle.denoiser import Denoiser, flow_matching_loss
from facemogle.encode import TextEmbeddings, encode_images, encode_prompts
from facemogle.flow import TimestepSampling
from facemogle.mogle import load_balancing_loss
from facemogle.packing import image_ids
from facemogle.quantization import optimizer_8bit
from facemogle.rules import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, check_ranges, optional
from facemogle.sampling import SampleOutput, SampleSettings, sample
from facemogle.seeding import derive_seed
from facemogle.sharding import shard_denoiser


@dataclass
class OptimConfig:
    # adamw8bit: bitsandbytes' AdamW8bit (facemogle.quantization.optimizer_8bit), moments in 8 bits
    name: Literal["adamw", "adamw8bit", "prodigy"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    # transformers' warmup-stable-decay: the lr rises linearly from 0 over `warmup_steps` optimizer steps,
    # and the last `decay_steps` before trainer.max_steps ramp it linearly down to 0
    warmup_steps: int = 0
    decay_steps: int = 0
    # the MoGLE experts' and gate's lr (AdamW); None: `lr`, as for the LoRA weights
    mogle_lr: float | None = None

    RULES: ClassVar[dict[str, Range]] = {
        "lr": POSITIVE,
        "mogle_lr": optional(POSITIVE),
        "weight_decay": NON_NEGATIVE,
        "warmup_steps": NON_NEGATIVE,
        "decay_steps": NON_NEGATIVE,
    }

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class TrainConfig:
    optim: OptimConfig = field(default_factory=OptimConfig)
    timesteps: TimestepSampling = field(default_factory=TimestepSampling)
    sample: SampleSettings = field(default_factory=SampleSettings)
    # The guidance scale a guidance-distilled backbone (FLUX.1-dev) is trained at; the official Face-MoGLE
    # training passes 1.0. Backbones without a guidance embedding ignore it.
    guidance: float = 1.0
    # Coefficient of the gate's load-balancing loss (facemogle.mogle.load_balancing_loss, Switch Transformer /
    # ST-MoE), added to the flow-matching loss; 0 leaves the loss as the paper's.
    gate_balance: float = 0.0
    # The mask guidance scale the conditional model is trained to carry (facemogle.denoiser's
    # flow_matching_loss): sampled at mask_scale 1 it follows the mask as true CFG at this scale would,
    # in one pass. 1 is the paper's loss; each step above 1 adds one no-grad pass without the mask.
    mask_guidance: float = 1.0

    RULES: ClassVar[dict[str, Range]] = {
        "guidance": POSITIVE,
        "gate_balance": NON_NEGATIVE,
        "mask_guidance": AT_LEAST_ONE,
    }

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class Batch:
    x0: torch.Tensor  # (b, l, d) clean image tokens
    cond: torch.Tensor  # (b, 20, l, d)
    text: TextEmbeddings


class FaceMoGLEModule(L.LightningModule):
    def __init__(
        self,
        backbone: FluxBackbone,
        denoiser: Denoiser,
        config: TrainConfig | None = None,
        resolution: int = 64,
        seed: int = 0,
        t5_on_accelerator: bool = True,
    ):
        super().__init__()
        self.seed = seed
        self.resolution = resolution
        self.backbone = backbone
        self.denoiser = denoiser
        self.config = config or TrainConfig()
        # Lightning moves the registered modules to the accelerator: T5 left out stays where it was loaded
        held = [backbone.text_encoder, backbone.text_encoder_2][: 2 if t5_on_accelerator else 1]
        self.text_encoders = torch.nn.ModuleList(held)
        self.vae = backbone.vae
        for module in (self.vae, self.text_encoders, backbone.text_encoder_2):
            module.requires_grad_(False).eval()
        f = backbone.vae_scale_factor
        self.register_buffer("img_ids", image_ids(resolution // f, resolution // f), persistent=False)

    # Checkpoints hold what trains (LoRA, MoGLE); the frozen backbone is rebuilt from its directory.
    strict_loading = False

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        trainable |= {n for n, _ in self.denoiser.mogle.named_buffers(prefix="denoiser.mogle")}
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in trainable}

    def configure_model(self) -> None:
        # Only experiments.training.strategy.FSDP2Strategy (trainer.strategy=fsdp) sets a device mesh.
        if self.device_mesh is not None:
            shard_denoiser(self.denoiser, self.device_mesh["data_parallel"])

    def train(self, mode: bool = True):
        super().train(mode)
        self.vae.eval()  # frozen encoders stay in eval mode
        self.text_encoders.eval()
        return self

    # --- training --------------------------------------------------------------------------------

    def prepare(self, batch: FaceItem | CachedItem) -> Batch:
        """A collated item (facemogle.batch) as the flow loss takes it: latents, and the text's embeddings."""
        dtype = self.backbone.transformer.dtype
        if "image_latents" in batch:
            if "text_sequence" in batch:
                text = TextEmbeddings(batch["text_sequence"], batch["text_pooled"])
            else:
                text = encode_prompts(self.backbone, list(batch["caption"]))
            return Batch(batch["image_latents"].to(dtype), batch["cond_latents"].to(dtype), text)
        x0 = encode_images(self.backbone, batch["image"]).to(dtype)
        cond = encode_images(self.backbone, batch["cond_maps"]).to(dtype)
        return Batch(x0, cond, encode_prompts(self.backbone, list(batch["caption"])))

    def training_step(self, batch: FaceItem | CachedItem, batch_idx: int) -> torch.Tensor:
        b = self.prepare(batch)
        g = self.step_generator(batch_idx)
        noise = torch.randn(b.x0.shape, generator=g).to(b.x0)
        t = self.config.timesteps.sample(b.x0.shape[0], generator=g).to(self.device)
        loss, out = flow_matching_loss(
            self.denoiser,
            b.x0,
            noise,
            t,
            b.text,
            self.img_ids,
            b.cond,
            self.config.guidance,
            self.config.mask_guidance,
        )
        n = b.x0.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log("train/gate_entropy", gate_entropy(out.gate_weights), batch_size=n)
        if self.denoiser.mogle.config.routes:
            balance = load_balancing_loss(out.gate_weights)
            self.log("train/gate_balance_loss", balance, batch_size=n)
            if self.config.gate_balance > 0:
                return loss + self.config.gate_balance * balance
        return loss

    def step_generator(self, batch_idx: int) -> torch.Generator:
        """Noise and timesteps are a function of (seed, rank, step, micro-batch), so a resumed run draws
        exactly what an uninterrupted one would, whatever RNG state the checkpoint held."""
        micro_batch = batch_idx % self.trainer.accumulate_grad_batches
        return torch.Generator().manual_seed(
            derive_seed(self.seed, self.global_rank, self.global_step, micro_batch)
        )

    def validation_step(self, batch: FaceItem | CachedItem, batch_idx: int) -> None:
        b = self.prepare(batch)
        g = torch.Generator(device="cpu").manual_seed(batch_idx)
        noise = torch.randn(b.x0.shape, generator=g).to(b.x0)
        t = torch.linspace(0.05, 0.95, b.x0.shape[0], device=self.device)  # fixed noise levels
        loss, _ = flow_matching_loss(
            self.denoiser, b.x0, noise, t, b.text, self.img_ids, b.cond, self.config.guidance
        )
        self.log("val/loss", loss, sync_dist=True, batch_size=b.x0.shape[0])

    def on_before_optimizer_step(self, optimizer) -> None:
        # Not Lightning's grad_norm: it reads p.grad.data, unallocated in FSDP's DTensor gradients, and
        # copies each parameter's norm to the host; torch's total norm does neither.
        grads = [p.grad for p in self.trainable_parameters() if p.grad is not None]
        if grads:
            norm = torch.nn.utils.get_total_norm(grads)
            self.log("train/grad_norm", norm.full_tensor() if isinstance(norm, DTensor) else norm)

    # --- optimisation ----------------------------------------------------------------------------

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def param_groups(self) -> list[dict]:
        """The trainable parameters: one group, or the MoGLE modules apart when `optim.mogle_lr` is set."""
        cfg = self.config.optim
        if cfg.mogle_lr is None:
            return [{"params": self.trainable_parameters()}]
        mogle = [p for p in self.denoiser.mogle.parameters() if p.requires_grad]
        ids = {id(p) for p in mogle}
        rest = [p for p in self.trainable_parameters() if id(p) not in ids]
        return [{"params": rest}, {"params": mogle, "lr": cfg.mogle_lr}]

    def configure_optimizers(self):
        cfg = self.config.optim
        if cfg.name == "prodigy":
            if cfg.mogle_lr is not None:
                raise ValueError(
                    "train.optim.mogle_lr is for adamw and adamw8bit: Prodigy estimates its own step size"
                )
            optimizer = _prodigy(self.trainable_parameters(), cfg)
        elif cfg.name == "adamw8bit":
            optimizer = optimizer_8bit(self.param_groups(), cfg.lr, cfg.betas, cfg.weight_decay)
        else:
            optimizer = torch.optim.AdamW(
                self.param_groups(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
            )
        return with_lr_schedule(optimizer, cfg, self.trainer.max_steps)

    # --- sampling (used by the evaluation callbacks) ---------------------------------------------

    @torch.no_grad()
    def generate(
        self, prompts: list[str] | None, masks: torch.Tensor | None, seed: int, **settings
    ) -> SampleOutput:
        cfg = SampleSettings(**{**vars(self.config.sample), **settings})
        res = self.resolution
        return sample(
            self.backbone, self.denoiser, prompts, masks, height=res, width=res, settings=cfg, seed=seed
        )


def gate_entropy(weights: torch.Tensor | None) -> torch.Tensor:
    """Mean entropy (nats) of the per-token expert distribution; log(20) = 3.0 is uniform."""
    if weights is None:
        return torch.tensor(0.0)
    return torch.distributions.Categorical(probs=weights.float()).entropy().mean()


def lr_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int) -> LambdaLR | None:
    """transformers' warmup-stable-decay schedule with a linear decay ending at 0 on `max_steps`; None
    without warm-up or decay. Optimizer step s has lr factor s / warmup_steps during the warm-up."""
    if cfg.warmup_steps == 0 and cfg.decay_steps == 0:
        return None
    if max_steps <= 0:
        if cfg.decay_steps > 0:
            raise ValueError("train.optim.decay_steps needs trainer.max_steps: the decay ends there")
        # no end to decay towards: warm up, then constant
        return get_wsd_schedule(optimizer, cfg.warmup_steps, 0, num_stable_steps=sys.maxsize)
    if cfg.warmup_steps + cfg.decay_steps > max_steps:
        raise ValueError(
            f"train.optim.warmup_steps {cfg.warmup_steps} + decay_steps {cfg.decay_steps} exceed "
            f"trainer.max_steps {max_steps}"
        )
    return get_wsd_schedule(optimizer, cfg.warmup_steps, cfg.decay_steps, max_steps, decay_type="linear")


def with_lr_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, max_steps: int):
    """What `configure_optimizers` returns: the optimizer alone, or with `lr_schedule` stepped every step."""
    schedule = lr_schedule(optimizer, cfg, max_steps)
    if schedule is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def _prodigy(params, cfg: OptimConfig):
    # The paper's settings: lr 1, bias correction, safeguard warm-up, weight decay 0.01.
    return Prodigy(
        params,
        lr=cfg.lr,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        use_bias_correction=True,
        safeguard_warmup=True,
    )
