"""MITRE's CWE catalogue XML as records: one `Weakness` or `Category` per entry.

prepare renders the records as training documents (`steps.prepare.cwe_documents`)
and evaluate builds its domain probes from the same records, so both agree on
what a weakness's ID, name, header and description are. The default corpus is
the catalogue shipped in the `cwe2` package, so the demo needs no download.

The file is streamed with lxml's `iterparse`, which hands only the `Weakness`
and `Category` elements to Python (the standard library's hands over every one
of the ~190,000 elements, and was most of the time of preparing the demo); each
entry becomes a record and is then freed, whatever the size of the catalogue.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import cwe2
from lxml import etree as ET

from steps.runtime.error_text import NotFound

CatalogueSource = str | Path | IO[bytes]


def bundled_catalogue_path() -> Path:
    """The CWE XML inside the installed `cwe2` package."""
    matches = sorted(Path(cwe2.__file__).parent.glob("database_*/cwec_v*.xml"))
    if not matches:
        raise NotFound("the cwe2 package has no cwec_v*.xml; reinstall it with `pip install cwe2`")
    return matches[-1]


def looks_like_cwe_catalogue(head: bytes) -> bool:
    """Whether the first bytes of an XML file belong to a CWE catalogue."""
    return b"Weakness_Catalog" in head


def entry_key(cwe_id: str) -> str:
    """`CWE-79`: how documents, probes and people name an entry."""
    return f"CWE-{cwe_id}"


@dataclass(frozen=True)
class Relation:
    nature: str
    """ChildOf, PeerOf, CanPrecede, ..."""
    cwe_id: str


@dataclass(frozen=True)
class Consequence:
    scopes: tuple[str, ...]
    impacts: tuple[str, ...]
    note: str


@dataclass(frozen=True)
class Mitigation:
    phases: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class ObservedExample:
    reference: str
    """Usually a CVE id."""
    description: str


@dataclass(frozen=True)
class Entry:
    """What every catalogue entry has: an ID, a name and a status, and the first line of its document."""

    id: str
    name: str | None
    status: str | None

    @property
    def key(self) -> str:
        return entry_key(self.id)

    @property
    def title(self) -> str:
        """The first line of its document: `CWE-79: <name>`."""
        return f"{self.key}: {self.name}"


@dataclass(frozen=True)
class Weakness(Entry):
    abstraction: str | None
    description: str
    extended_description: str
    related: tuple[Relation, ...]
    """In catalogue order, repeated once per view that lists them."""
    consequences: tuple[Consequence, ...]
    mitigations: tuple[Mitigation, ...]
    observed_examples: tuple[ObservedExample, ...]
    demonstrative_intros: tuple[str, ...]

    @property
    def header(self) -> str:
        """The second line of its document."""
        return f"Abstraction: {self.abstraction}. Status: {self.status}."

    @property
    def deprecated(self) -> bool:
        return self.status == "Deprecated" or (self.name or "").startswith("DEPRECATED")


@dataclass(frozen=True)
class Category(Entry):
    """A grouping of weaknesses (an OWASP Top Ten entry, a CERT rule, ...)."""

    summary: str
    members: tuple[str, ...]
    """Member CWE ids, in catalogue order, repeated once per view that lists them."""

    @property
    def header(self) -> str:
        return f"Category. Status: {self.status}."


def _local(tag: object) -> str:
    # Comments and processing instructions have a function, not a string, as their tag.
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(element: ET.Element | None) -> str:
    """All text below an element (XHTML paragraphs and lists included), whitespace folded."""
    if element is None:
        return ""
    # str.split() folds exactly the characters `\s` matches (str.isspace()), faster than a regex substitution.
    return " ".join(" ".join(element.itertext()).split())


def _child(element: ET.Element, name: str) -> ET.Element | None:
    # `{*}name`: the name in any namespace or none, matched by lxml in C (a loop over children in Python was a
    # quarter of the time of reading the catalogue).
    return element.find("{*}" + name)


def _children(element: ET.Element | None, name: str) -> list[ET.Element]:
    return [] if element is None else element.findall("{*}" + name)


def _texts(element: ET.Element, name: str) -> tuple[str, ...]:
    return tuple(_text(child) for child in _children(element, name))


def _weakness(element: ET.Element) -> Weakness:
    consequences = tuple(
        Consequence(_texts(c, "Scope"), _texts(c, "Impact"), _text(_child(c, "Note")))
        for c in _children(_child(element, "Common_Consequences"), "Consequence")
    )
    mitigations = tuple(
        Mitigation(_texts(m, "Phase"), _text(_child(m, "Description")))
        for m in _children(_child(element, "Potential_Mitigations"), "Mitigation")
    )
    observed = tuple(
        ObservedExample(_text(_child(e, "Reference")), _text(_child(e, "Description")))
        for e in _children(_child(element, "Observed_Examples"), "Observed_Example")
    )
    intros = (
        _text(_child(e, "Intro_Text"))
        for e in _children(_child(element, "Demonstrative_Examples"), "Demonstrative_Example")
    )
    related = tuple(
        Relation(r.get("Nature"), r.get("CWE_ID"))
        for r in _children(_child(element, "Related_Weaknesses"), "Related_Weakness")
    )
    return Weakness(
        id=element.get("ID"),
        name=element.get("Name"),
        abstraction=element.get("Abstraction"),
        status=element.get("Status"),
        description=_text(_child(element, "Description")),
        extended_description=_text(_child(element, "Extended_Description")),
        related=related,
        consequences=consequences,
        mitigations=mitigations,
        observed_examples=observed,
        demonstrative_intros=tuple(intro for intro in intros if intro),
    )


def _category(element: ET.Element) -> Category:
    members = _children(_child(element, "Relationships"), "Has_Member")
    return Category(
        id=element.get("ID"),
        name=element.get("Name"),
        status=element.get("Status"),
        summary=_text(_child(element, "Summary")),
        members=tuple(member.get("CWE_ID") for member in members),
    )


def _elements(source: CatalogueSource, tags: tuple[str, ...]) -> Iterator[ET.Element]:
    source = str(source) if isinstance(source, Path) else source
    # Whitespace-only text nodes are left out (the indentation: nearly two thirds of the bundled catalogue's
    # text nodes). `_text` joins the nodes with spaces and folds whitespace, so they never change a record,
    # and skipping them made reading a catalogue a tenth faster.
    events = ET.iterparse(source, events=("end",), tag=tags, resolve_entities=False, remove_blank_text=True)
    for _, element in events:
        yield element
        # Free the entry and the (now empty) ones before it, so the tree never grows.
        element.clear()
        while element.getprevious() is not None:
            del element.getparent()[0]


def read_entries(source: CatalogueSource, categories: bool = True) -> Iterator[Weakness | Category]:
    """Each weakness and (unless `categories` is False) each category, in catalogue order."""
    tags = ("{*}Weakness", "{*}Category") if categories else ("{*}Weakness",)
    for element in _elements(source, tags):
        yield _weakness(element) if _local(element.tag) == "Weakness" else _category(element)


def read_weaknesses(source: CatalogueSource) -> Iterator[Weakness]:
    yield from read_entries(source, categories=False)  # type: ignore[misc]
