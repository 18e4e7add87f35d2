"""CWE catalogue records (`steps.formats.cwe_catalogue`) rendered as training documents.

A weakness's document starts with its title and header lines and its
description, the layout evaluate's probes are written against; related
weaknesses and category members are named (`CWE-74: <name>`), so that the
hierarchy an analyst navigates by is in the text, not only bare numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

from steps.formats.cwe_catalogue import CatalogueSource, Category, Weakness, entry_key, entry_names, read_entries


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


def cwe_documents(
    source: CatalogueSource, names: dict[str, str | None] | None = None, categories: bool = True
) -> Iterator[tuple[str, str]]:
    """(`CWE-<id>`, document text) for each weakness, then each category, of a CWE catalogue XML.

    `names` (from `entry_names`) names related weaknesses and category members; a path is read
    twice to find them when not given, a stream's are left as bare IDs.
    """
    if names is None and not hasattr(source, "read"):
        names = entry_names(source)
    names = names or {}
    for entry in read_entries(source, categories):
        render = weakness_document if isinstance(entry, Weakness) else category_document
        yield entry.key, render(entry, names)
