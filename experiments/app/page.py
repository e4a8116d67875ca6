"""The demo's gradio page (experiments.demo has what it calls). Element ids, which the browser test uses:
mask-editor, mask-upload, examples, prompt, mode, seed, steps, generate, status, face, gate, gate-table,
parse, miou."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio loads: no telemetry calls
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from experiments.app.core import CANVAS, MAX_UPLOAD_BYTES, Demo, palette_css, read_upload, to_editor
from facemogle.face_parts import PALETTE, PARTS, colorize
from facemogle.sampling import MODES

log = logging.getLogger(__name__)
PREVIEW = 256  # displayed size of the face and its maps, in CSS pixels
CSS = f"""
#face img, #gate img, #parse img {{image-rendering: pixelated; width: {PREVIEW}px; height: {PREVIEW}px; object-fit: contain}}
#gate-table img {{image-rendering: pixelated}}
.chip {{display: inline-block; margin: 1px 6px 1px 0}}
"""


def swatch_names() -> str:
    """A script for the page's head: each brush swatch of the editor gets its class name as title and
    aria-label (gradio draws the swatches as bare coloured buttons)."""
    names = {f"rgb({r}, {g}, {b})": name for (r, g, b), name in zip(PALETTE.tolist(), PARTS, strict=True)}
    return f"""<script>
const FACE_PARTS = {json.dumps(names)};
new MutationObserver(() => {{
  document.querySelectorAll("#mask-editor button[style*='background-color']").forEach((b) => {{
    const name = FACE_PARTS[b.style.backgroundColor];
    if (name && b.title !== name) {{ b.title = name; b.setAttribute("aria-label", name); }}
  }});
}}).observe(document.documentElement, {{subtree: true, childList: true}});
</script>"""


def legend() -> str:
    chips = [
        f'<span class="chip"><span style="background:{c};border:1px solid #888;padding:0 7px">&nbsp;</span> {name}</span>'
        for c, name in zip(palette_css(), PARTS, strict=True)
    ]
    return (
        "<div id='legend'><b>Brushes</b> (the editor's swatches, in this order): "
        + " ".join(chips)
        + "</div>"
    )


def build(demo: Demo, examples: list[tuple[np.ndarray, str]]) -> gr.Blocks:
    defaults = demo.pipe.config.sample_defaults
    guided = demo.pipe.denoiser.has_guidance
    with gr.Blocks(title="Face-MoGLE", analytics_enabled=False) as page:
        gr.Markdown(f"## Face-MoGLE: `{demo.run.config.run_dir}`, {demo.resolution}x{demo.resolution} faces")
        with gr.Row():
            with gr.Column():
                editor = gr.ImageEditor(
                    value=to_editor(np.zeros((demo.resolution,) * 2, dtype=np.uint8)),
                    label="Mask (draw with the class brushes)",
                    elem_id="mask-editor",
                    image_mode="RGBA",
                    type="numpy",
                    format="png",  # lossless: webp would move the colours off the palette
                    canvas_size=(CANVAS, CANVAS),
                    fixed_canvas=True,
                    transforms=(),
                    layers=False,
                    sources=(),
                    brush=gr.Brush(colors=palette_css(), default_color=palette_css()[1], color_mode="fixed"),
                )
                gr.HTML(legend())
                upload = gr.File(
                    label="Upload a label map or a palette mask",
                    file_types=["image"],
                    type="filepath",
                    elem_id="mask-upload",
                )
                gallery = gr.Gallery(
                    value=[(colorize(labels), caption) for labels, caption in examples],
                    label="Examples from the test split (click one)",
                    elem_id="examples",
                    columns=4,
                    height=180,
                    allow_preview=False,
                    visible=bool(examples),
                )
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt")
                mode = gr.Radio(list(MODES), value="text+mask", label="Mode", elem_id="mode")
                with gr.Row():
                    seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed")
                    steps = gr.Slider(1, 50, value=defaults["steps"], step=1, label="Steps", elem_id="steps")
                if guided:
                    scales = [gr.Slider(1, 10, value=defaults["guidance"], label="Guidance (FLUX embedding)")]
                    scale_keys = ["guidance_scale"]
                else:
                    scales = [
                        gr.Slider(0, 8, value=defaults["text_scale"], step=0.1, label="Text scale (CFG)"),
                        gr.Slider(0, 8, value=defaults["mask_scale"], step=0.1, label="Mask scale (CFG)"),
                    ]
                    scale_keys = ["text_scale", "mask_scale"]
                with gr.Accordion("Region strength (each expert's gate weight x this)", open=False):
                    strengths = [
                        gr.Slider(0, 3, value=1.0, step=0.05, label=name, elem_id=f"strength-{name}")
                        for name in demo.regions()
                    ]
                generate = gr.Button("Generate", variant="primary", elem_id="generate")
                status = gr.Markdown(elem_id="status")
            with gr.Column():
                face = gr.Image(label="Face", elem_id="face", height=PREVIEW, interactive=False, format="png")
                gate = gr.Image(
                    label="Gate: each region's weight on its own expert (mean over steps, scaled to the maximum)",
                    elem_id="gate",
                    height=PREVIEW,
                    interactive=False,
                    format="png",
                )
                table = gr.Image(
                    label="Gate per region and expert, first and last step",
                    elem_id="gate-table",
                    height=220,
                    interactive=False,
                )
                parse = gr.Image(
                    label="The face parsed",
                    elem_id="parse",
                    height=PREVIEW,
                    interactive=False,
                    visible=demo.parser is not None,
                )
                miou = gr.Markdown(elem_id="miou")

        def on_upload(path):
            """-> the editor, the status, and the upload box emptied for the next file."""
            if path is None:
                return gr.update(), "", None
            try:
                labels, warning = read_upload(path)
            except ValueError as e:
                gr.Warning(str(e))
                return gr.update(), f"**Mask refused:** {e}", None
            if warning:
                gr.Warning(warning)
            return to_editor(labels), f"**Warning:** {warning}" if warning else "Mask loaded.", None

        def on_example(event: gr.SelectData):
            labels, caption = examples[event.index]
            return to_editor(labels), caption

        def on_generate(drawing, text, chosen_mode, seed_value, n_steps, *values):
            start = time.perf_counter()
            try:
                labels, warning = demo.labels(drawing)
                result = demo.generate(
                    labels,
                    text,
                    chosen_mode,
                    seed_value or 0,
                    n_steps,
                    dict(zip(scale_keys, values[: len(scale_keys)], strict=True)),
                    dict(zip(demo.regions(), values[len(scale_keys) :], strict=True)),
                )
            except ValueError as e:
                return gr.update(), gr.update(), gr.update(), gr.update(), "", f"**Error:** {e}"
            notes = [f"Generated in {time.perf_counter() - start:.2f} s."]
            if result.regions:
                notes.append("Mask regions: " + ", ".join(result.regions))
            if warning:
                notes.append(f"**Warning:** {warning}")
            score = (
                f"mIoU of the parse against the mask: **{result.miou:.3f}**"
                if result.miou is not None
                else ""
            )
            return result.image, result.gate, result.gate_table, result.parse, score, "  \n".join(notes)

        upload.upload(on_upload, upload, [editor, status, upload])
        gallery.select(on_example, None, [editor, prompt])
        generate.click(
            on_generate,
            [editor, prompt, mode, seed, steps, *scales, *strengths],
            [face, gate, table, parse, miou, status],
        )
    return page


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def check_access(host: str, auth: tuple[str, str] | None, allow_open_access: bool) -> None:
    """A page served beyond this machine needs a password (gradio's auth) or the user's explicit consent to
    an open page; either way it is logged as a warning."""
    if is_loopback(host):
        return
    if auth is None and not allow_open_access:
        raise ValueError(
            f"--host {host} serves the demo to the network with no password: give --auth USER:PASSWORD, "
            "or --allow-open-access to serve it open to anyone who can reach it"
        )
    log.warning(
        "the demo is served on %s, beyond this machine%s",
        host,
        " (password protected)" if auth else ", OPEN to anyone who can reach it (--allow-open-access)",
    )


def launch(
    demo: Demo,
    examples,
    host: str,
    port: int,
    block: bool,
    auth: tuple[str, str] | None = None,
    allow_open_access: bool = False,
) -> gr.Blocks:
    """Serve the page; block=False returns at once (tests), and the caller closes the page."""
    check_access(host, auth, allow_open_access)
    page = build(demo, examples)
    theme = gr.themes.Default(font=["system-ui", "sans-serif"], font_mono=["monospace"])  # no web fonts
    page.launch(
        server_name=host,
        server_port=port,
        prevent_thread_lock=not block,
        theme=theme,
        css=CSS,
        head=swatch_names(),
        quiet=not block,
        auth=auth,
        max_file_size=MAX_UPLOAD_BYTES,  # gradio refuses a larger upload before it is stored
    )
    return page
