"""The synthetic faces' attributes, label maps and images (data_modules.synthetic writes them).

Each face is a label map drawn from ellipses and convex polygons in face coordinates (u, v) (face
centre at 0, the face ellipse about 0.42 x 0.55 half-canvases), placed on the canvas with a random
scale, shift, roll and yaw, in painter's order: cloth, neck, back hair, ears, face, front hair,
features, accessories. The image follows the labels with attribute colours (skin tone, hair colour,
lipstick, ...), sphere-like shading, hair strands, eye details and noise, so parsing it is not a colour
lookup. The image is drawn at twice the size and box-downsampled; the label map is drawn from the same
geometry at the output pixels' centres, so labels and image pixels line up exactly. Parts are sized for
64^2 (an eye is about 6 x 3 pixels there, a brow 2 pixels high): thinner ones could not be segmented or
generated at that resolution, so no metric could tell a model that follows its mask from one that does not.
"l_" parts are on the person's left (the image's right).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from facemogle.face_parts import NUM_PARTS, PART_INDEX

SKIN_TONES = {
    "pale": (250, 222, 200),
    "fair": (238, 196, 165),
    "light": (222, 172, 134),
    "olive": (196, 146, 102),
    "brown": (150, 98, 64),
    "dark": (96, 62, 44),
}
HAIR_COLORS = {
    "black": (28, 24, 22),
    "brown": (96, 60, 34),
    "blond": (218, 182, 116),
    "gray": (158, 156, 154),
    "red": (158, 68, 34),
}
LIPSTICKS = ((178, 30, 52), (200, 60, 90), (140, 20, 40), (210, 90, 100))
METALS = ((212, 175, 55), (192, 192, 200))
HAIR_LENGTHS = ("bald", "short", "medium", "long")


@dataclass
class Attributes:
    gender: str  # "female" | "male"
    skin: str  # key of SKIN_TONES
    hair_color: str  # key of HAIR_COLORS
    hair_length: str  # one of HAIR_LENGTHS
    wavy: bool
    bangs: bool
    smiling: bool
    mouth_open: bool
    lipstick: bool
    eyeglasses: bool
    hat: bool
    earrings: bool
    necklace: bool
    yaw: float  # -1..1, positive: the face turns to the image's right
    roll: float  # radians
    scale: float


def sample_attributes(rng: np.random.Generator) -> Attributes:
    """Frequencies roughly follow CelebA's attribute statistics."""
    female = rng.random() < 0.58
    lengths = (0.0, 0.12, 0.28, 0.6) if female else (0.08, 0.7, 0.15, 0.07)
    hair_p = (0.28, 0.32, 0.26, 0.07, 0.07) if female else (0.38, 0.38, 0.08, 0.12, 0.04)
    smiling = rng.random() < 0.48
    return Attributes(
        gender="female" if female else "male",
        skin=str(rng.choice(list(SKIN_TONES), p=(0.18, 0.3, 0.22, 0.14, 0.1, 0.06))),
        hair_color=str(rng.choice(list(HAIR_COLORS), p=hair_p)),
        hair_length=str(rng.choice(HAIR_LENGTHS, p=lengths)),
        wavy=bool(rng.random() < (0.45 if female else 0.2)),
        bangs=bool(rng.random() < (0.25 if female else 0.1)),
        smiling=bool(smiling),
        mouth_open=bool(smiling and rng.random() < 0.7),
        lipstick=bool(female and rng.random() < 0.75),
        eyeglasses=bool(rng.random() < 0.07),
        hat=bool(rng.random() < 0.05),
        earrings=bool(rng.random() < (0.32 if female else 0.03)),
        necklace=bool(rng.random() < (0.2 if female else 0.02)),
        yaw=float(np.clip(rng.normal(0, 0.35), -0.8, 0.8)),
        roll=float(np.clip(rng.normal(0, 0.1), -0.3, 0.3)),
        scale=float(rng.uniform(0.9, 1.12)),
    )


def _ellipse_r2(u, v, cx, cy, rx, ry, angle=0.0):
    """Squared normalised radius: < 1 inside the ellipse."""
    du, dv = u - cx, v - cy
    if angle:
        c, s = np.cos(angle), np.sin(angle)
        du, dv = c * du + s * dv, -s * du + c * dv
    return (du / rx) ** 2 + (dv / ry) ** 2


def _ellipse(u, v, cx, cy, rx, ry, angle=0.0):
    return _ellipse_r2(u, v, cx, cy, rx, ry, angle) < 1.0


def _polygon(u, v, points):
    """Inside a convex polygon given by its corners in either winding."""
    pts = np.asarray(points, dtype=np.float64)
    sides = []
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
        sides.append((x1 - x0) * (v - y0) - (y1 - y0) * (u - x0))
    sides = np.stack(sides)
    return (sides >= 0).all(0) | (sides <= 0).all(0)


@dataclass
class _Canvas:
    u: np.ndarray  # (S, S) face coordinates
    v: np.ndarray
    labels: np.ndarray  # (S, S) uint8

    def paint(self, where: np.ndarray, part: str) -> None:
        self.labels[where] = PART_INDEX[part]


def _face_coords(size: int, a: Attributes, offset: tuple[float, float]):
    """Face coordinates (u, v) of the centres of a size x size pixel grid."""
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(axis, axis, indexing="ij")
    x, y = x - offset[0], y - offset[1]
    c, s = np.cos(a.roll), np.sin(a.roll)
    return (c * x + s * y) / a.scale, (-s * x + c * y) / a.scale


def draw_labels(size: int, a: Attributes, offset: tuple[float, float]) -> tuple[np.ndarray, dict]:
    """-> (size, size) uint8 label map and the geometry the renderer needs; `offset` shifts the face."""
    u, v = _face_coords(size, a, offset)
    cv = _Canvas(u, v, np.zeros((size, size), dtype=np.uint8))
    shift = 0.09 * a.yaw  # features move towards the turn
    fw = 0.42 * (1 - 0.08 * abs(a.yaw))  # face half-width
    angle = np.arctan2(v, u)
    wave = 1 + (0.05 * np.sin(14 * angle) if a.wavy else 0.0)

    back = np.zeros_like(u, dtype=bool)
    if a.hair_length in ("medium", "long"):  # behind the head and neck, strands over the shoulders
        bottom = 0.45 if a.hair_length == "medium" else 1.1
        back = (_ellipse_r2(u, v, 0, -0.08, fw + 0.14, 0.7) < wave) | (
            (np.abs(u) < fw + 0.13 * wave) & (v > -0.1)
        )
        back &= v < bottom + 0.05 * np.sin(9 * u)
        cv.paint(back, "hair")
    cloth = _ellipse(u, v, 0, 1.4, 1.15, 0.72) | (v > 1.2)
    cv.paint((np.abs(u - shift / 2) < 0.2) & (v > 0.2), "neck")
    neckline = _ellipse(u, v, shift / 2, 0.8, 0.26, 0.17)
    cv.paint(cloth & ~neckline, "cloth")
    cv.paint(back & (np.abs(u - shift / 2) > 0.27), "hair")
    if a.necklace:
        ring = _ellipse_r2(u, v, shift / 2, 0.55, 0.21, 0.3)
        cv.paint((np.abs(ring - 1) < 0.2) & (v > 0.62), "neck_l")
    ear_y, ear_rx = 0.0, 0.075
    for side, part in ((-1, "r_ear"), (1, "l_ear")):
        turned_away = side * a.yaw < 0
        rx = ear_rx * (1 - 0.6 * abs(a.yaw)) if turned_away else ear_rx
        cv.paint(_ellipse(u, v, side * (fw + 0.01) + shift / 3, ear_y, rx + 0.02, 0.13), part)
        if a.earrings:
            cv.paint(_ellipse(u, v, side * (fw + 0.02) + shift / 3, ear_y + 0.17, 0.05, 0.06), "ear_r")
    face_r2 = _ellipse_r2(u, v, shift / 3, 0.02, fw, np.where(v > 0, 0.58, 0.55))
    cv.paint(face_r2 < 1, "skin")
    if a.hair_length != "bald":
        line = -0.12 if a.bangs else -0.3 - 0.04 * abs(np.sin(3 * u))
        top = (_ellipse_r2(u, v, shift / 3, -0.1, fw + 0.06, 0.62) < wave) & (v < line + 0.06 * u**2)
        cv.paint(top, "hair")
    if a.hat:
        crown = _ellipse(u, v, shift / 3, -0.42, fw + 0.1, 0.36) & (v < -0.3)
        brim = _ellipse(u, v, shift / 3, -0.32, fw + 0.2, 0.06)
        cv.paint(crown | brim, "hat")

    eye_y, eye_dx = -0.07, 0.17
    for side, brow in ((-1, "r_brow"), (1, "l_brow")):
        near = 1 + 0.25 * side * a.yaw  # the eye on the side the face turns to looks wider
        ex = side * eye_dx * (1 - 0.15 * side * a.yaw) + shift
        cv.paint(_ellipse(u, v, ex, -0.22, 0.11 * near, 0.036, side * 0.15), brow)
    if a.eyeglasses:
        lenses = [
            _ellipse(u, v, side * eye_dx * (1 - 0.15 * side * a.yaw) + shift, eye_y + 0.01, 0.13, 0.095)
            for side in (-1, 1)
        ]
        bridge = (np.abs(u - shift) < 0.06) & (np.abs(v - eye_y + 0.02) < 0.015)
        cv.paint(lenses[0] | lenses[1] | bridge, "eye_g")
    eyes = []
    for side, eye in ((-1, "r_eye"), (1, "l_eye")):
        near = 1 + 0.25 * side * a.yaw
        ex = side * eye_dx * (1 - 0.15 * side * a.yaw) + shift
        eyes.append((ex, eye_y))
        cv.paint(_ellipse(u, v, ex, eye_y, 0.085 * near, 0.046 if not a.smiling else 0.04), eye)
    nx = 1.6 * shift
    cv.paint(_polygon(u, v, [(nx, -0.06), (nx - 0.07, 0.17), (nx + 0.07, 0.17)]), "nose")
    cv.paint(_ellipse(u, v, nx, 0.16, 0.075, 0.035), "nose")
    mx, my = 1.2 * shift, 0.33
    width = 0.15 if a.smiling else 0.13
    curve = 0.06 * (u - mx) ** 2 / width**2 * (0.6 if a.smiling else 0.1)
    vv = v + curve  # smiles lift the corners
    gap = 0.04 if a.mouth_open else 0.0
    cv.paint(_ellipse(u, vv, mx, my - 0.014, width, 0.04) & (vv < my), "u_lip")
    cv.paint(_ellipse(u, vv, mx, my + gap, width * 0.92, 0.048) & (vv >= my + gap * 0.5), "l_lip")
    if a.mouth_open:
        cv.paint(_ellipse(u, vv, mx, my + gap / 2, width * 0.85, gap * 0.75 + 0.005), "mouth")
    return cv.labels, {"u": u, "v": v, "face_r2": face_r2, "eyes": eyes, "mouth_y": my, "mouth_x": mx}


def render(labels: np.ndarray, geo: dict, a: Attributes, rng: np.random.Generator) -> np.ndarray:
    """Label map -> (S, S, 3) float image in 0..255 following it."""
    u, v = geo["u"], geo["v"]
    jitter = lambda c, s=10: np.clip(np.asarray(c, float) + rng.normal(0, s, 3), 0, 255)  # noqa: E731
    skin, hair = jitter(SKIN_TONES[a.skin], 6), jitter(HAIR_COLORS[a.hair_color], 8)
    lips = jitter(LIPSTICKS[rng.integers(len(LIPSTICKS))]) if a.lipstick else skin * (0.82, 0.62, 0.62)
    table = np.zeros((NUM_PARTS, 3))
    colors = {
        "background": jitter(rng.uniform(40, 220, 3), 0),
        "skin": skin,
        "nose": skin * 0.9,
        "eye_g": skin * 0.9 + 10,
        "l_eye": (236, 234, 228),
        "r_eye": (236, 234, 228),
        "l_brow": hair * 0.75,
        "r_brow": hair * 0.75,
        "l_ear": skin * 0.93,
        "r_ear": skin * 0.93,
        "mouth": (70, 24, 28),
        "u_lip": lips,
        "l_lip": lips * 1.05,
        "hair": hair,
        "hat": jitter(rng.uniform(20, 230, 3), 0),
        "ear_r": METALS[rng.integers(len(METALS))],
        "neck_l": METALS[rng.integers(len(METALS))],
        "neck": skin * 0.85,
        "cloth": jitter(rng.uniform(15, 240, 3), 0),
    }
    for name, color in colors.items():
        table[PART_INDEX[name]] = color
    image = table[labels]
    # Sphere-like shading of the head under a random light; the background gets a gradient.
    light = rng.normal(0, 1, 3) * (1, 1, 0) + (0, 0, 2.5)
    light /= np.linalg.norm(light)
    r2 = np.clip(geo["face_r2"], 0, 1)
    normal = np.stack([u / 0.6, v / 0.8, np.sqrt(1 - np.minimum(r2, 0.98))])
    normal /= np.linalg.norm(normal, axis=0, keepdims=True)
    shade = 0.72 + 0.32 * np.clip(np.tensordot(light, normal, 1), 0, 1)
    is_bg = labels == PART_INDEX["background"]
    image *= np.where(is_bg, 1.0, shade)[..., None]
    image[is_bg] *= (0.85 + 0.3 * (u[is_bg] * light[0] + v[is_bg] * light[1]).clip(-0.5, 0.5))[:, None] + 0.0
    # Hair strands, iris and pupil, teeth, glasses frames.
    is_hair = (
        (labels == PART_INDEX["hair"]) | (labels == PART_INDEX["l_brow"]) | (labels == PART_INDEX["r_brow"])
    )
    phase = 40 * u + (4 * np.sin(9 * v) if a.wavy else 0) + rng.uniform(0, 6)
    image[is_hair] *= (1 + 0.15 * np.sin(phase[is_hair]))[:, None]
    iris = jitter(((70, 45, 25), (60, 100, 150), (70, 110, 60))[rng.integers(3)])
    eye_parts = np.isin(labels, (PART_INDEX["l_eye"], PART_INDEX["r_eye"]))
    for ex, ey in geo["eyes"]:
        r2 = _ellipse_r2(u, v, ex + 0.02 * a.yaw, ey, 0.035, 0.035)
        image[eye_parts & (r2 < 1)] = iris
        image[eye_parts & (r2 < 0.3)] = (15, 12, 12)
    mouth = labels == PART_INDEX["mouth"]
    teeth = mouth & (v < geo["mouth_y"] + 0.012)
    image[teeth] = (225, 220, 205)
    if a.eyeglasses:
        glasses = labels == PART_INDEX["eye_g"]
        frame = glasses & ~np.roll(glasses, 2, axis=0) | glasses & ~np.roll(glasses, -2, axis=1)
        image[frame] = jitter((25, 22, 20), 8)
    image += rng.normal(0, 5, image.shape)
    return image.clip(0, 255)
