"""MITRE's CWE catalogue XML turned into one document per weakness and per category.

The default corpus is the catalogue shipped in the `cwe2` package, so the demo
needs no download. The file is streamed with lxml's `iterparse`, which hands
only the `Weakness` elements to Python (the standard library's hands over every
one of the ~190,000 elements, and was most of the time of preparing the demo);
each weakness is turned into text and then freed, whatever the size of the catalogue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from lxml import etree as ET

_WS = re.compile(r"\s+")


def bundled_catalogue_path() -> Path:
    """The CWE XML inside the installed `cwe2` package."""
    import cwe2

    matches = sorted(Path(cwe2.__file__).parent.glob("database_*/cwec_v*.xml"))
    if not matches:
        raise FileNotFoundError("the cwe2 package has no cwec_v*.xml; reinstall it with `pip install cwe2`")
    return matches[-1]


def _local(tag: object) -> str:
    # Comments and processing instructions have a function, not a string, as their tag.
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(element: ET.Element | None) -> str:
    """All text below an element (XHTML paragraphs and lists included), whitespace folded."""
    if element is None:
        return ""
    return _WS.sub(" ", " ".join(element.itertext())).strip()


def _child(element: ET.Element, name: str) -> ET.Element | None:
    for child in element:
        if _local(child.tag) == name:
            return child
    return None


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    if element is None:
        return []
    return [child for child in element if _local(child.tag) == name]


def _consequences(weakness: ET.Element) -> list[str]:
    lines = []
    for consequence in _children(_child(weakness, "Common_Consequences"), "Consequence"):
        scopes = ", ".join(_text(s) for s in _children(consequence, "Scope"))
        impacts = ", ".join(_text(i) for i in _children(consequence, "Impact"))
        note = _text(_child(consequence, "Note"))
        line = f"Scope: {scopes}. Impact: {impacts}."
        lines.append(f"{line} {note}".strip())
    return lines


def _mitigations(weakness: ET.Element) -> list[str]:
    lines = []
    for mitigation in _children(_child(weakness, "Potential_Mitigations"), "Mitigation"):
        phases = ", ".join(_text(p) for p in _children(mitigation, "Phase"))
        description = _text(_child(mitigation, "Description"))
        lines.append(f"{phases}: {description}" if phases else description)
    return lines


def _examples(weakness: ET.Element) -> list[str]:
    lines = []
    for example in _children(_child(weakness, "Observed_Examples"), "Observed_Example"):
        reference = _text(_child(example, "Reference"))
        lines.append(f"{reference}: {_text(_child(example, 'Description'))}")
    for example in _children(_child(weakness, "Demonstrative_Examples"), "Demonstrative_Example"):
        intro = _text(_child(example, "Intro_Text"))
        if intro:
            lines.append(intro)
    return lines


def _named(cwe_id: str, names: dict[str, str]) -> str:
    """`CWE-74: <name>`, or the bare `CWE-74` when the name is unknown."""
    name = names.get(cwe_id)
    return f"CWE-{cwe_id}: {name}" if name else f"CWE-{cwe_id}"


def _related(weakness: ET.Element, names: dict[str, str]) -> list[str]:
    """`ChildOf CWE-74: <name>` per related weakness, once each (the XML repeats them per view)."""
    related = _children(_child(weakness, "Related_Weaknesses"), "Related_Weakness")
    return list(dict.fromkeys(f"{r.get('Nature')} {_named(r.get('CWE_ID'), names)}" for r in related))


def weakness_to_text(weakness: ET.Element, names: dict[str, str]) -> str:
    """One weakness as a readable document: name, description, related weaknesses, consequences, ..."""
    cwe_id = weakness.get("ID")
    parts = [f"CWE-{cwe_id}: {weakness.get('Name')}"]
    parts.append(f"Abstraction: {weakness.get('Abstraction')}. Status: {weakness.get('Status')}.")
    parts.append(f"Description: {_text(_child(weakness, 'Description'))}")
    extended = _text(_child(weakness, "Extended_Description"))
    if extended:
        parts.append(f"Extended description: {extended}")
    for title, lines in (
        # Named, so that the hierarchy an analyst navigates by (CWE-79 is a child of CWE-74, ...) is in
        # the text, not only bare numbers.
        ("Related weaknesses", _related(weakness, names)),
        ("Common consequences", _consequences(weakness)),
        ("Potential mitigations", _mitigations(weakness)),
        ("Examples", _examples(weakness)),
    ):
        if lines:
            parts.append(f"{title}:\n" + "\n".join(f"- {line}" for line in lines))
    return "\n".join(parts)


def category_to_text(category: ET.Element, names: dict[str, str]) -> str:
    """A category (an OWASP Top Ten entry, a CERT rule, ...) as a document listing its members by ID and name."""
    parts = [f"CWE-{category.get('ID')}: {category.get('Name')}", f"Category. Status: {category.get('Status')}."]
    summary = _text(_child(category, "Summary"))
    if summary:
        parts.append(f"Summary: {summary}")
    members = _children(_child(category, "Relationships"), "Has_Member")
    if members:
        lines = dict.fromkeys(_named(member.get("CWE_ID"), names) for member in members)
        parts.append("Members:\n" + "\n".join(f"- {line}" for line in lines))
    return "\n".join(parts)


def _entries(source: str | IO[bytes], tags: tuple[str, ...]) -> Iterator[ET.Element]:
    for _, element in ET.iterparse(source, events=("end",), tag=tags, resolve_entities=False):
        yield element
        # Free the entry and the (now empty) ones before it, so the tree never grows.
        element.clear()
        while element.getprevious() is not None:
            del element.getparent()[0]


def weakness_names(source: str | Path | IO[bytes]) -> dict[str, str]:
    """ID → name of every weakness and category: a first pass, since an entry may name one defined after it."""
    source = str(source) if isinstance(source, Path) else source
    return {element.get("ID"): element.get("Name") for element in _entries(source, ("{*}Weakness", "{*}Category"))}


def read_cwe_catalogue(
    source: str | Path | IO[bytes], names: dict[str, str] | None = None, categories: bool = True
) -> Iterator[tuple[str, str]]:
    """Yield (`CWE-<id>`, text) for each weakness, then each category, of a CWE catalogue XML.

    `names` (from `weakness_names`) names related weaknesses and category members; a path is read
    twice to find them when not given, a stream's are left as bare IDs.
    """
    source = str(source) if isinstance(source, Path) else source
    if names is None and isinstance(source, str):
        names = weakness_names(source)
    names = names or {}
    tags = ("{*}Weakness", "{*}Category") if categories else ("{*}Weakness",)
    for element in _entries(source, tags):
        to_text = weakness_to_text if _local(element.tag) == "Weakness" else category_to_text
        yield f"CWE-{element.get('ID')}", to_text(element, names)


def looks_like_cwe_catalogue(head: bytes) -> bool:
    """Whether the first bytes of an XML file belong to a CWE catalogue."""
    return b"Weakness_Catalog" in head
