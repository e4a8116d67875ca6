"""FaceMoGLEAdapter: the trained condition path (MoGLE, the condition tokens' settings and position offset)
as a diffusers model component, so a FaceMoGLEPipeline saves and loads it beside the stock FLUX folders."""

from __future__ import annotations

from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from facemogle.flux_forward import ConditionSettings
from facemogle.mogle import MoGLE, MoGLEConfig


class FaceMoGLEAdapter(ModelMixin, ConfigMixin):
    """The trained condition path: MoGLE (`mogle`), the condition tokens' settings and position offset."""

    _keep_in_fp32_modules = ["mogle"]  # a bf16 backbone beside a float32 MoGLE, as training exports it

    @register_to_config
    def __init__(
        self,
        mogle_config: dict | None = None,
        condition_settings: dict | None = None,
        cond_id_offset: tuple[float, float, float] = (0.0, 0.0, 0.0),
    ):
        super().__init__()
        self.mogle = MoGLE(MoGLEConfig(**(mogle_config or {})))

    @property
    def condition(self) -> ConditionSettings:
        return ConditionSettings(**(self.config.condition_settings or {}))
