"""A quantised frozen base: FLUX's transformer and T5 loaded through diffusers' and transformers' own
quantisation configs, with LoRA (peft) on the quantised layers and MoGLE left in full precision.

    setting   transformer (diffusers)                        T5 (transformers)
    none      the checkpoint's weights in backbone.dtype     the same
    int8      TorchAoConfig(Int8WeightOnlyConfig())          the same (transformers' TorchAoConfig)
    fp8       TorchAoConfig(Float8WeightOnlyConfig())        the same
    nf4       BitsAndBytesConfig(load_in_4bit, nf4)          the same (transformers' BitsAndBytesConfig)

All are weight-only: the weights are stored quantised and each matmul runs in backbone.dtype, so a gradient
flows through the frozen layers to the LoRA and MoGLE below them, and peft wraps each quantised linear with
its own LoRA layer (`peft.tuners.lora.torchao`, `peft.tuners.lora.bnb`). Only LoRA and MoGLE are saved, so
what was trained on one base loads on any other.

diffusers' bitsandbytes quantizer refuses to run without a GPU ("No GPU found"); without one, nf4 is the
same BitsAndBytesConfig applied after loading (`_nf4_on_cpu`: each nn.Linear becomes bitsandbytes'
Linear4bit, quantised as it is built), which is what the CPU tests run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch

QUANTIZATIONS = ("none", "int8", "nf4", "fp8")
# Backends asked for by name that cannot work here, with why: a start-up error, never a silent no-op.
REFUSED = {
    "quanto": "optimum-quanto's layers carry no peft LoRA (diffusers#10512, peft#1997)",
    "qint8": "optimum-quanto's layers carry no peft LoRA (diffusers#10512, peft#1997); int8 is torchao's",
    "qfloat8": "optimum-quanto's layers carry no peft LoRA (diffusers#10512, peft#1997; LoRA without effect "
    "on a qfloat8 FLUX, black-forest-labs/flux#157); fp8 is torchao's",
    "fp4": "bitsandbytes' fp4 is not offered: nf4 is the 4-bit setting",
    "int4": "torchao's int4 weight-only layout has no peft LoRA: nf4 is the 4-bit setting",
}


@dataclass
class QuantizationConfig:
    """backbone.quantization: how the frozen transformer and the T5 encoder (text_encoder_2) are stored."""

    transformer: str = "none"  # none | int8 | nf4 | fp8
    text_encoder_2: str = "none"  # none | int8 | nf4 | fp8

    def __post_init__(self) -> None:
        for f in fields(self):
            check_quantization(f"backbone.quantization.{f.name}", getattr(self, f.name))

    @property
    def any(self) -> bool:
        return self.transformer != "none" or self.text_encoder_2 != "none"


def check_quantization(key: str, value: str) -> None:
    if value in QUANTIZATIONS:
        return
    why = f": {REFUSED[value]}" if value in REFUSED else ""
    raise ValueError(f"{key}={value!r}{why}; expected one of {', '.join(QUANTIZATIONS)}")


def check_strategy(config: QuantizationConfig, strategy: str) -> None:
    """FSDP2 shards every parameter along dim 0: a quantised weight is a tensor subclass (torchao's Int8Tensor
    and Float8Tensor, bitsandbytes' packed Params4bit with its quant_state) that fully_shard does not split."""
    if config.transformer != "none" and "fsdp" in str(strategy).lower():
        raise ValueError(
            f"backbone.quantization.transformer={config.transformer!r} with trainer.strategy={strategy!r}: "
            "FSDP cannot shard a quantised base (its weights are torchao / bitsandbytes tensor subclasses); "
            "use trainer.strategy=ddp, or backbone.quantization.transformer=none with fsdp"
        )


def _accelerator() -> bool:
    return torch.cuda.is_available() or torch.xpu.is_available()


def _torchao_type(setting: str):
    from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

    return {"int8": Int8WeightOnlyConfig, "fp8": Float8WeightOnlyConfig}[setting]()


def diffusers_config(setting: str, dtype: torch.dtype):
    """diffusers' quantisation config for FluxTransformer2DModel.from_pretrained; None for `none`."""
    from diffusers import BitsAndBytesConfig, TorchAoConfig

    if setting == "none":
        return None
    if setting == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return TorchAoConfig(_torchao_type(setting))


def transformers_config(setting: str, dtype: torch.dtype):
    """transformers' quantisation config for T5EncoderModel.from_pretrained; None for `none`."""
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if setting == "none":
        return None
    if setting == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return TorchAoConfig(_torchao_type(setting))


def load_transformer(root: Path, setting: str, dtype: torch.dtype):
    from diffusers import FluxTransformer2DModel

    check_quantization("backbone.quantization.transformer", setting)
    kw = {"torch_dtype": dtype, "local_files_only": True}
    if setting == "nf4" and not _accelerator():
        return _nf4_on_cpu(FluxTransformer2DModel.from_pretrained(root, subfolder="transformer", **kw), dtype)
    config = diffusers_config(setting, dtype)
    if config is not None:
        kw["quantization_config"] = config
    return FluxTransformer2DModel.from_pretrained(root, subfolder="transformer", **kw)


def load_text_encoder_2(root: Path, setting: str, dtype: torch.dtype):
    from transformers import T5EncoderModel

    check_quantization("backbone.quantization.text_encoder_2", setting)
    kw = {"torch_dtype": dtype, "local_files_only": True}
    config = transformers_config(setting, dtype)
    if config is not None:
        kw["quantization_config"] = config
    model = T5EncoderModel.from_pretrained(root, subfolder="text_encoder_2", **kw)
    if setting == "nf4" and not _accelerator():
        _no_cpu_repacking(model)
    return model


def _no_cpu_repacking(model: torch.nn.Module) -> None:
    """bitsandbytes' Linear4bit on the CPU repacks its weight for an inference kernel at the first eval-mode
    call without gradients. That kernel has no backward (a repacked frozen layer cuts the gradient to the LoRA
    below it), and state_dict() (every checkpoint) unpacks it again (a resumed run would switch kernels where
    the uninterrupted one did not): every 4-bit layer keeps the one kernel."""
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False


def _nf4_on_cpu(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """diffusers' BitsAndBytesConfig(nf4) by hand where its quantizer needs a GPU: every nn.Linear (as
    diffusers converts them, none skipped by default) becomes a Linear4bit quantised on construction."""
    import bitsandbytes as bnb

    for name, linear in list(model.named_modules()):
        if type(linear) is not torch.nn.Linear:
            continue
        quantised = bnb.nn.Linear4bit(
            linear.in_features, linear.out_features, bias=linear.bias is not None, compute_dtype=dtype,
            quant_type="nf4", device="meta",
        )  # fmt: skip
        quantised.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False, quant_type="nf4")
        if linear.bias is not None:
            quantised.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, quantised.to("cpu"))
    _no_cpu_repacking(model)
    return model


def quantised_linears(module: torch.nn.Module) -> int:
    """How many linear layers hold quantised weights (torchao tensor subclasses or bitsandbytes layers)."""
    count = 0
    for m in module.modules():
        weight = getattr(m, "weight", None)
        if isinstance(m, torch.nn.Linear) and weight is not None:
            name = type(weight).__module__
            count += name.startswith("torchao") or name.startswith("bitsandbytes")
    return count


def optimizer_8bit(params, lr: float, betas: tuple[float, float], weight_decay: float):
    """bitsandbytes' AdamW8bit: Adam's two moments stored in 8 bits, blockwise-quantised (tensors under
    4096 elements keep 32-bit state, bitsandbytes' min_8bit_size)."""
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(params, lr=lr, betas=betas, weight_decay=weight_decay)
