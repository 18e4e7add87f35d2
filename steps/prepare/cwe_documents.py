"""CWE catalogue records (`steps.formats.cwe_catalogue`) rendered as training documents.

A weakness's document starts with its title and header lines and its
description, the layout evaluate's probes are written against; related
weaknesses and category members are named (`CWE-74: <name>`), so that the
hierarchy an analyst navigates by is in the text, not only bare numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from steps.formats.cwe_catalogue import CatalogueSource, Category, Weakness, entry_key, read_entries


def _named(cwe_id: str, names: dict[str, str | None]) -> str:
    """`CWE-74: <name>`, or the bare `CWE-74` when the name is unknown."""
    name = names.get(cwe_id)
    return f"{entry_key(cwe_id)}: {name}" if name else entry_key(cwe_id)


def _listed(lines: Iterator[str]) -> list[str]:
    return list(dict.fromkeys(lines))  # once each: the catalogue repeats an entry per view


def weakness_document(weakness: Weakness, names: dict[str, str | None]) -> str:
    """One weakness as a readable document: name, description, related weaknesses, consequences, ..."""
    parts = [weakness.title, weakness.header, f"Description: {weakness.description}"]
    if weakness.extended_description:
        parts.append(f"Extended description: {weakness.extended_description}")
    consequences = []
    for c in weakness.consequences:
        line = f"Scope: {', '.join(c.scopes)}. Impact: {', '.join(c.impacts)}."
        consequences.append(f"{line} {c.note}".strip())
    mitigations = []
    for m in weakness.mitigations:
        phases = ", ".join(m.phases)
        mitigations.append(f"{phases}: {m.description}" if phases else m.description)
    examples = [f"{e.reference}: {e.description}" for e in weakness.observed_examples]
    for title, lines in (
        ("Related weaknesses", _listed(f"{r.nature} {_named(r.cwe_id, names)}" for r in weakness.related)),
        ("Common consequences", consequences),
        ("Potential mitigations", mitigations),
        ("Examples", examples + list(weakness.demonstrative_intros)),
    ):
        if lines:
            parts.append(f"{title}:\n" + "\n".join(f"- {line}" for line in lines))
    return "\n".join(parts)


def category_document(category: Category, names: dict[str, str | None]) -> str:
    """A category as a document listing its members by ID and name."""
    parts = [category.title, category.header]
    if category.summary:
        parts.append(f"Summary: {category.summary}")
    members = _listed(_named(member, names) for member in category.members)
    if members:
        parts.append("Members:\n" + "\n".join(f"- {line}" for line in members))
    return "\n".join(parts)


def cwe_documents(source: CatalogueSource, categories: bool = True) -> Iterator[tuple[str, str]]:
    """(`CWE-<id>`, document text) for each weakness, then (unless `categories` is False) each category.

    Related weaknesses and category members are often defined later in the file, so the catalogue's entries
    are parsed once and held before any is rendered: about a third of the file's size (4.9 MB for the 15 MB
    catalogue, and `data.max_file_bytes` bounds the file), where a second parse for the names alone cost a
    third of the time of reading the catalogue.
    """
    entries = list(read_entries(source))
    names = {entry.id: entry.name for entry in entries}
    for entry in entries:
        if isinstance(entry, Weakness):
            yield entry.key, weakness_document(entry, names)
        elif categories:
            yield entry.key, category_document(entry, names)
