#!/usr/bin/env python
"""Fill the Results page of a book build from the executed chapters.

    python book/_tools/results_page.py SITE

``SITE`` is the folder the Makefile builds the book in: ``_config.yml``, ``_toc.yml``, ``book/`` and
the executed ``notebooks/``. A chapter puts a result on the Results page by tagging the code cell
that shows it ``results`` (cell metadata ``tags``: no code needed, so the notebook runs the same on
Colab). For every such cell, in the order of ``_toc.yml``, this script

1. names each of its rich outputs (a table, a figure, Markdown: ``display_data`` and
   ``execute_result``; printed text is not taken) for myst-nb's glue, in the executed copy only:
   ``metadata.scrapbook = {"name": "<chapter>-<cell>-<k>", "mime_prefix": ""}`` (the output stays
   where it was in the chapter);
2. writes, at the line ``<!-- results -->`` of ``SITE/book/results.md``, a section per chapter that
   links to it and pastes those outputs with ``{glue}`` directives (``:doc:`` the chapter), under the
   heading of the chapter section the cell belongs to.

So the page shows exactly what the chapters computed in this build, at this build's profile.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

TAG = "results"
MARKER = "<!-- results -->"
RICH = ("display_data", "execute_result")


def toc_files(toc: dict) -> list[str]:
    """Every ``file`` of a Jupyter Book ``_toc.yml`` (root first), in order."""
    out = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk({k: v for k, v in toc.items() if k != "root"})
    return out


def _heading(source: str, level: int) -> str | None:
    m = re.search(rf"^{'#' * level}\s+(.+?)\s*$", source, flags=re.MULTILINE)
    return m.group(1) if m else None


def tag_results(nb_path: Path) -> tuple[str, list[tuple[str | None, list[str]]]]:
    """Name the outputs of the ``results`` cells of one executed notebook (in place).

    Returns the chapter title and, per tagged cell, (its section heading, the glue names)."""
    nb = json.loads(nb_path.read_text(encoding="utf-8"))
    title, section, found = None, None, []
    changed = False
    for i, cell in enumerate(nb["cells"]):
        source = "".join(cell.get("source", []))
        if cell["cell_type"] == "markdown":
            title = title or _heading(source, 1)
            section = _heading(source, 2) or section
            continue
        if cell["cell_type"] != "code" or TAG not in cell.get("metadata", {}).get("tags", []):
            continue
        names = []
        for k, out in enumerate(o for o in cell.get("outputs", []) if o.get("output_type") in RICH):
            name = f"{nb_path.stem}-{i}-{k}"
            meta = out.setdefault("metadata", {})
            if meta.get("scrapbook", {}).get("name") != name:
                meta["scrapbook"] = {"name": name, "mime_prefix": ""}
                changed = True
            names.append(name)
        if names:
            found.append((section, names))
    if changed:
        nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return title or nb_path.stem, found


def results_markdown(site: Path) -> str:
    toc = yaml.safe_load((site / "_toc.yml").read_text(encoding="utf-8"))
    parts = []
    for entry in toc_files(toc):
        nb_path = site / f"{entry}.ipynb"
        if not nb_path.is_file():
            continue
        title, found = tag_results(nb_path)
        if not found:
            continue
        rel = f"../{entry}.ipynb"
        parts.append(f"## {title}\n\nFrom [the chapter]({rel}).\n")
        for section, names in found:
            if section:
                parts.append(f"**{section}**\n")
            for name in names:
                parts.append(f"```{{glue}} {name}\n:doc: {rel}\n```\n")
    if not parts:
        return "No chapter tagged a result in this build.\n"
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path, help="the book build folder (_config.yml, _toc.yml, book/, notebooks/)")
    args = ap.parse_args(argv)
    page = args.site / "book" / "results.md"
    if not page.is_file():
        print(f"error: {page} not found (copy book/ into the build folder first)", file=sys.stderr)
        return 1
    text = page.read_text(encoding="utf-8")
    if MARKER not in text:
        print(f"error: {page} has no line {MARKER!r} to fill", file=sys.stderr)
        return 1
    page.write_text(text.replace(MARKER, results_markdown(args.site), 1), encoding="utf-8")
    print(f"{page}: results of the executed chapters pasted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
