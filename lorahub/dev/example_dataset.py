"""A small training folder for demos and tests: images, captions, a sources file, and one image whose own XMP says
its owner opted out of data mining. Needs Pillow (it comes with the ``train`` extra)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lorahub import errors

DMI_PROHIBITED = "http://ns.useplus.org/ldf/vocab/DMI-PROHIBITED"
COLOURS = ((220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 200, 40))
SOURCES = (
    ("img-0.png", "https://example.com/a", "Ana", "CC-BY-4.0", "licensed", "none"),
    ("img-1.png", "https://example.com/b", "Ben", "CC0-1.0", "public-domain", "none"),
    ("img-2.png", "", "", "", "explicit-opt-in", "none"),
)


def _xmp_opt_out() -> str:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:plus="http://ns.useplus.org/ldf/xmp/1.0/">'
        f'<plus:DataMining rdf:resource="{DMI_PROHIBITED}"/></rdf:Description></rdf:RDF></x:xmpmeta>'
    )


def write_example_dataset(directory: Path) -> Path:
    """Write four captioned PNGs (the last opted out through XMP) and ``sources.csv``; return the sources path."""
    try:
        from PIL import Image, PngImagePlugin
    except ImportError:
        raise errors.MissingExtraError("making example images", "train") from None
    directory.mkdir(parents=True, exist_ok=True)
    for index, colour in enumerate(COLOURS):
        info = PngImagePlugin.PngInfo()
        if index == len(COLOURS) - 1:
            info.add_itxt("XML:com.adobe.xmp", _xmp_opt_out())
        out = io.BytesIO()
        Image.new("RGB", (32, 32), colour).save(out, format="PNG", pnginfo=info)
        (directory / f"img-{index}.png").write_bytes(out.getvalue())
        (directory / f"img-{index}.txt").write_text(f"example style, solid colour {index}\n", encoding="utf-8")
    sources = directory / "sources.csv"
    with sources.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "source", "author", "license", "status", "people"])
        writer.writerows(SOURCES)
    return sources
