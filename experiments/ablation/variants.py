"""The ablation's variants: each is a few overrides of an ordinary training config (experiments/configs/tiny.yaml,
whose experts are residual), plus one reference row that needs no training.

Every variant sets all of VARIANT_KEYS, so a user config that changes one of them cannot turn "full" into
something else. The plain-condition baseline needs no model code of its own: one identity expert over the
global colour map with no gate passes that map's packed VAE latent through unchanged, so the condition
tokens are the colour mask alone (OminiControl's spatial condition) and only LoRA trains.
"""

from __future__ import annotations

from dataclasses import dataclass

MOGLE_KEYS = ("model.mogle.gate", "model.mogle.experts", "model.mogle.expert_set")
BALANCE_KEY = "train.gate_balance"
VARIANT_KEYS = (*MOGLE_KEYS, BALANCE_KEY)
# Switch Transformer's and ST-MoE's auxiliary-loss coefficient (alpha = 1e-2 in both papers)
BALANCE_COEFFICIENT = 0.01


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    gate: str
    experts: str
    expert_set: str
    gate_balance: float = 0.0

    @property
    def overrides(self) -> list[str]:
        values = (self.gate, self.experts, self.expert_set, self.gate_balance)
        return [f"{k}={v}" for k, v in zip(VARIANT_KEYS, values, strict=True)]


@dataclass(frozen=True)
class Reference:
    """A row read from another variant's runs in another sampling mode: no training of its own."""

    name: str
    description: str
    source: str  # the variant whose runs are sampled
    mode: str  # facemogle.sampling mode


VARIANTS = {
    v.name: v
    for v in (
        Variant(
            "full",
            "Face-MoGLE: global + 19 local residual experts, dynamic gate",
            "dynamic",
            "residual",
            "all",
        ),
        # A gate over a single expert always gives it weight 1, so it is left out.
        Variant("global_only", "the global expert alone", "none", "residual", "global"),
        Variant("local_only", "the 19 local experts, dynamic gate", "dynamic", "residual", "local"),
        Variant(
            "scalar_gate",
            "gate averaged over tokens: one weight per expert and image",
            "scalar",
            "residual",
            "all",
        ),
        Variant("static_gate", "learned fixed expert weights", "static", "residual", "all"),
        Variant("no_gate", "plain sum of the 20 experts", "none", "residual", "all"),
        Variant(
            "identity_experts",
            "no experts: the gate mixes the 20 condition latents",
            "dynamic",
            "identity",
            "all",
        ),
        Variant(
            "identity_no_gate",
            "no experts, no gate: the sum of the 20 condition latents",
            "none",
            "identity",
            "all",
        ),
        Variant(
            "plain",
            "no MoGLE: the colour mask's latent as condition tokens (OminiControl)",
            "none",
            "identity",
            "global",
        ),
        Variant("mlp_experts", "the paper's experts: plain MLPs, not residual", "dynamic", "mlp", "all"),
        Variant(
            "balanced",
            f"full + the gate's load-balancing loss (Switch Transformer, coefficient {BALANCE_COEFFICIENT})",
            "dynamic",
            "residual",
            "all",
            BALANCE_COEFFICIENT,
        ),
    )
}

REFERENCES = {
    "mask_dropped": Reference(
        "mask_dropped",
        "full sampled from its captions alone, with no condition tokens (the bare backbone)",
        "full",
        "text",
    ),
}

# Face-MoGLE paper (arXiv 2509.00428), Tables 3-5, MM-CelebA-HQ, for reference only:
# variant -> (the paper's name for it, (FID, KID, Mask, Text)). The paper's experts are MLPs.
PAPER_COLUMNS = ("FID", "KID", "Mask", "Text")
_PAPER_FULL = (22.24, 10.87, 2.44, 26.32)
PAPER = {
    "full": ("full, with MLP experts (Tables 3-5)", _PAPER_FULL),
    "mlp_experts": ("full (Tables 3-5)", _PAPER_FULL),
    "scalar_gate": ("scalar gate (Table 4)", (43.48, 30.58, 4.74, 26.72)),
    "static_gate": ("static weights (Table 4)", (25.74, 13.12, 2.37, 26.53)),
    "no_gate": ("experts only (Table 5)", (26.55, 14.87, 3.20, 26.38)),
    "global_only": ("global only (Table 3)", (30.36, 18.16, 2.47, 26.30)),
    "local_only": ("local only (Table 3)", (33.62, 20.45, 4.87, 27.07)),
    "identity_experts": ("gate only (Table 5)", (31.30, 19.11, 2.60, 26.64)),
    "identity_no_gate": ("neither experts nor gate (Table 5)", (33.25, 23.07, 2.49, 26.71)),
}


def parse_variants(text: str) -> list[str]:
    """'full,plain' -> ['full', 'plain'], in VARIANTS' order; an unknown name is an error naming it."""
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"--variants {text!r}: unknown {unknown}; expected names from {list(VARIANTS)}")
    return [v for v in VARIANTS if v in names]
