"""Face-MoGLE as a diffusers pipeline: a finished run's export (or a saved pipeline) in, faces out.

    pipe = FaceMoGLEPipeline.from_pretrained("runs/tiny/export")           # backbone from config.yaml
    pipe = FaceMoGLEPipeline.from_pretrained("runs/x/export", backbone="checkpoints/FLUX.1-dev",
                                             torch_dtype=torch.bfloat16)
    out = pipe("She has blond hair.", mask_image=Image.open("mask.png"), region_scale={"hair": 1.5},
               generator=torch.Generator().manual_seed(0))
    out.images[0], out.region_gate                                          # the face, the gate per region
    pipe.save_pretrained("pipe/"); FaceMoGLEPipeline.from_pretrained("pipe/")

Components: the stock FLUX ones (transformer, vae, text_encoder(_2), tokenizer(_2), scheduler) and `mogle`,
a FaceMoGLEAdapter (MoGLE and how its tokens enter FLUX). The transformer carries the run's LoRA (peft);
a saved pipeline keeps it beside the stock folders in lora/pytorch_lora_weights.safetensors and the
transformer/ folder LoRA-free, as the backbone it came from. Sampling is facemogle.sampling.sample, the
sampler training's callback uses too; the defaults of its settings are the run's train.sample.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback

from facemogle.adapter import FaceMoGLEAdapter
from facemogle.atomic import atomic_write_json
from facemogle.backbone import DTYPES, MODEL_FOLDERS, TOKENIZER_FOLDERS, FluxBackbone, load_flux
from facemogle.data_only import load_tensors, load_weights
from facemogle.denoiser import Denoiser
from facemogle.export import (
    LORA,
    MANIFEST,
    MOGLE_FILE,
    ExportSpec,
    check_export,
    check_manifest,
    manifest,
    read_export_spec,
)
from facemogle.gate_analysis import region_gate_weights
from facemogle.lora import load_lora, lora_layer_names, save_lora
from facemogle.mask_images import mask_batch
from facemogle.pipeline_output import OUTPUT_TYPES, FaceMoGLEPipelineOutput, postprocess
from facemogle.quantization import QuantizationConfig, quantised_linears
from facemogle.sampling import SampleSettings, sample, seed_generators

log = logging.getLogger(__name__)
FLUX_COMPONENTS = (
    *MODEL_FOLDERS,
    *TOKENIZER_FOLDERS,
    "scheduler",
)  # FluxBackbone's parts, named as its folders


class FaceMoGLEPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->text_encoder_2->transformer->vae"
    _exclude_from_cpu_offload = ["mogle"]  # the gate runs beside the transformer at every step
    _callback_tensor_inputs = ["latents"]

    def __init__(
        self,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae,
        text_encoder,
        tokenizer,
        text_encoder_2,
        tokenizer_2,
        transformer,
        mogle: FaceMoGLEAdapter,
        resolution: int = 64,
        max_sequence_length: int = 512,
        sample_defaults: dict | None = None,
    ):
        super().__init__()
        self.register_modules(
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=tokenizer_2,
            transformer=transformer,
            mogle=mogle,
        )
        sample_defaults = asdict(SampleSettings(**(sample_defaults or {})))  # checked here
        self.register_to_config(
            resolution=resolution, max_sequence_length=max_sequence_length, sample_defaults=sample_defaults
        )
        offset = tuple(mogle.config.cond_id_offset)
        self.denoiser = Denoiser(transformer, mogle.mogle, mogle.condition, offset)

    @property
    def backbone(self) -> FluxBackbone:
        parts = {name: getattr(self, name) for name in FLUX_COMPONENTS}
        return FluxBackbone(**parts, max_sequence_length=self.config.max_sequence_length)

    # --- loading and saving ------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls,
        path,
        backbone: str | Path | None = None,
        torch_dtype=None,
        allow_unverified: bool = False,
        quantization: QuantizationConfig | None = None,
        **kwargs,
    ):
        """A saved pipeline (model_index.json), or a run's export folder (or the run folder holding it):
        the backbone from the path its config.yaml records, or `backbone` (a FLUX.1-dev directory). Either
        folder's files must match its manifest.json (facemogle.export.check_manifest) unless
        `allow_unverified`. quantization: the base's storage for a run's export, in place of its config.yaml's
        (an export holds only LoRA and MoGLE, so one trained on an nf4 base samples on the bf16 one)."""
        path = Path(path)
        if (path / "model_index.json").is_file():
            if backbone is not None or quantization is not None:
                raise ValueError(
                    f"{path} is a saved pipeline with its own backbone: backbone= and quantization= are for a "
                    "run's export"
                )
            check_manifest(path, verify=not allow_unverified)
            pipe = super().from_pretrained(path, torch_dtype=torch_dtype, **kwargs)
            if (path / LORA).is_file():
                load_lora(pipe.transformer, path / LORA)
            return pipe
        export = path / "export" if (path / "export").is_dir() else path
        spec = read_export_spec(check_export(export, verify=not allow_unverified))
        if backbone is not None:
            spec = replace(spec, backbone_path=str(backbone))
        if quantization is not None:
            spec = replace(spec, quantization=quantization)
        return cls.from_export(export, spec, torch_dtype)

    @classmethod
    def from_export(
        cls, export: str | Path, spec: ExportSpec | None = None, torch_dtype: torch.dtype | None = None
    ) -> FaceMoGLEPipeline:
        """`spec` (default: read from export/config.yaml) says where the backbone is and how to sample."""
        export = Path(export)
        spec = spec or read_export_spec(check_export(export))
        if spec.backbone_dtype not in DTYPES:
            raise ValueError(f"backbone.dtype={spec.backbone_dtype!r}: expected one of {sorted(DTYPES)}")
        dtype = torch_dtype or DTYPES[spec.backbone_dtype]
        flux = load_flux(
            spec.backbone_path,
            dtype,
            max_sequence_length=spec.max_sequence_length,
            quantization=spec.quantization,
        )
        flux.freeze()
        if spec.mogle.token_dim != flux.token_dim:
            raise ValueError(
                f"model.mogle.token_dim={spec.mogle.token_dim} but the backbone's packed tokens have width "
                f"{flux.token_dim}"
            )
        load_lora(flux.transformer, export / LORA)
        adapter = FaceMoGLEAdapter(asdict(spec.mogle), asdict(spec.condition), spec.cond_id_offset)
        load_weights(adapter.mogle, load_tensors(export / MOGLE_FILE), export / MOGLE_FILE)
        adapter.eval()
        return cls.from_backbone(flux, adapter, spec.resolution, spec.sample)

    @classmethod
    def from_backbone(
        cls, flux: FluxBackbone, adapter: FaceMoGLEAdapter, resolution: int, sample_defaults: SampleSettings
    ) -> FaceMoGLEPipeline:
        return cls(
            **{name: getattr(flux, name) for name in FLUX_COMPONENTS},
            mogle=adapter,
            resolution=resolution,
            max_sequence_length=flux.max_sequence_length,
            sample_defaults=asdict(sample_defaults),
        )

    def save_pretrained(self, save_directory, **kwargs) -> None:
        """The stock folders (transformer/ without LoRA, as the backbone it came from), mogle/, and the
        LoRA in diffusers' FLUX LoRA format in lora/; manifest.json, each file's sha256, last."""
        save_directory = Path(save_directory)
        if quantised_linears(self.transformer) or quantised_linears(self.text_encoder_2):
            raise ValueError(
                "a pipeline on a quantised base (backbone.quantization) is not saved with its quantised weights: "
                "save it from the unquantised base, or share the run's export (LoRA and MoGLE only)"
            )
        if not lora_layer_names(self.transformer):
            super().save_pretrained(save_directory, **kwargs)
        else:
            lora = save_lora(self.transformer, save_directory / Path(LORA).parent)
            self.transformer.unload_lora()  # the stock folder holds the stock weights
            try:
                super().save_pretrained(save_directory, **kwargs)
            finally:
                load_lora(self.transformer, lora)
        atomic_write_json(save_directory / MANIFEST, manifest(save_directory))

    # --- sampling -----------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        mask_image=None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        text_scale: float | None = None,
        mask_scale: float | None = None,
        text_only_condition: str | None = None,
        region_scale: dict[str, float] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        settings: SampleSettings | None = None,
    ):
        """prompt and/or mask_image (one of either is repeated to the other's count), each made
        `num_images_per_prompt` times. Unset scales and steps come from `settings`, else the run's
        train.sample. guidance_scale: FLUX.1-dev's guidance embedding; text_scale / mask_scale: true
        classifier-free guidance for a backbone without one. generator: one per image or one for the batch
        (default: drawn from torch's global generator)."""
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type={output_type!r}: expected one of {OUTPUT_TYPES}")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        labels, warnings = mask_batch(mask_image)
        for warning in warnings:
            log.warning(warning)
        if prompts is not None and labels is not None and len(prompts) != len(labels):
            if len(prompts) == 1:
                prompts = prompts * len(labels)
            elif len(labels) == 1:
                labels = labels.expand(len(prompts), -1, -1)
        if num_images_per_prompt > 1:
            prompts = [p for p in prompts for _ in range(num_images_per_prompt)] if prompts else prompts
            labels = labels.repeat_interleave(num_images_per_prompt, 0) if labels is not None else None
        chosen = _settings(
            settings or SampleSettings(**self.config.sample_defaults),
            steps=num_inference_steps,
            guidance=guidance_scale,
            text_scale=text_scale,
            mask_scale=mask_scale,
            text_only_condition=text_only_condition,
        )
        if generator is None and (prompts is not None or labels is not None):
            n = len(prompts) if prompts is not None else labels.shape[0]
            generator = seed_generators(int(torch.randint(2**62, ())), n)
        size = height or self.config.resolution, width or self.config.resolution
        with self.progress_bar(total=chosen.steps) as bar:
            out = sample(
                self.backbone,
                self.denoiser,
                prompts,
                labels,
                height=size[0],
                width=size[1],
                settings=chosen,
                generator=generator,
                expert_scale=self.mogle.mogle.config.expert_scale(region_scale),
                device=self._execution_device,
                on_step=self._step_callback(bar, callback_on_step_end, callback_on_step_end_tensor_inputs),
            )
        self.maybe_free_model_hooks()
        f = 2 * self.backbone.vae_scale_factor  # pixels a packed token covers
        per_token = [
            g.expand(out.images.shape[0], (size[0] // f) * (size[1] // f), -1) for g in out.gate_weights
        ]
        gates = torch.stack(per_token, dim=1) if per_token else None  # a scalar or static gate's, per token
        region = region_gate_weights(per_token, labels) if gates is not None and labels is not None else None
        images = postprocess(out.images, output_type)
        result = FaceMoGLEPipelineOutput(images, gates, region, labels, out.sigmas, out.text_only_condition)
        return result if return_dict else result.to_tuple()

    def _step_callback(self, bar, callback, tensor_inputs):
        if isinstance(callback, PipelineCallback | MultiPipelineCallbacks):
            tensor_inputs = callback.tensor_inputs
        unknown = [k for k in tensor_inputs if k not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown}: expected {self._callback_tensor_inputs}"
            )

        def on_step(i: int, timestep: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
            bar.update()
            if callback is None:
                return latents
            returned = callback(self, i, timestep, {"latents": latents} if "latents" in tensor_inputs else {})
            return (returned or {}).get("latents", latents)

        return on_step


def _settings(base: SampleSettings, **given) -> SampleSettings:
    """`base` with the values given (not None) in place of its own."""
    return replace(base, **{k: v for k, v in given.items() if v is not None})
