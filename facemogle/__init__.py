"""Face-MoGLE: a mixture of global and local experts on a frozen FLUX transformer (arXiv 2509.00428)."""

import importlib.util
import sys


def _bind_pil_image_processors() -> None:
    """Without torchvision (the CPU install), transformers serves `CLIPImageProcessor` and
    `SiglipImageProcessor` (diffusers' IP-adapter loader imports both) as their PIL classes, warning on
    every start; this binds the PIL classes first, as that fallback does, without the warning."""
    if importlib.util.find_spec("torchvision") is not None:
        return
    import transformers

    pil = {
        name: getattr(transformers, f"{name}Pil") for name in ("CLIPImageProcessor", "SiglipImageProcessor")
    }
    # loading those submodules puts a new lazy `transformers` module in sys.modules: bind on that one
    for name, cls in pil.items():
        setattr(sys.modules["transformers"], name, cls)


_bind_pil_image_processors()
