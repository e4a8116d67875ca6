"""The synthetic set's attributes.json (data_modules.synthetic) as targets for the attributes its captions
state: the hair colour (every caption of a face with hair names it) and lipstick (named when worn)."""

from __future__ import annotations

import json
from pathlib import Path

ATTRIBUTES_FILE = "attributes.json"


def read_attributes(root: str | Path) -> dict[str, dict]:
    """{face id: {attribute: value}}; a set without the file is an error naming it."""
    path = Path(root) / ATTRIBUTES_FILE
    if not path.is_file():
        raise ValueError(
            f"{path} does not exist: attribute accuracy needs the attributes the synthetic set records "
            "(python -m data_modules.synthetic, `make data`)"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def attribute_targets(attributes: dict) -> dict[str, str | None]:
    """One face's targets: hair_color (None when bald: no hair to read) and lipstick ("yes" / "no")."""
    bald = attributes["hair_length"] == "bald"
    return {
        "hair_color": None if bald else attributes["hair_color"],
        "lipstick": "yes" if attributes["lipstick"] else "no",
    }
