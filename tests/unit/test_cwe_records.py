"""The CWE catalogue as records: one source for the training documents and the probes."""

from __future__ import annotations

from lxml import etree

from steps.evaluate.probes import cwe_probes
from steps.formats.cwe_catalogue import Category, Weakness, _category, _weakness, bundled_catalogue_path, read_entries
from steps.prepare.cwe_documents import cwe_documents


def test_records_carry_what_analysts_look_up() -> None:
    entries = {entry.key: entry for entry in read_entries(bundled_catalogue_path())}
    xss = entries["CWE-79"]
    assert isinstance(xss, Weakness) and xss.name.startswith("Improper Neutralization of Input During Web Page")
    assert xss.header == "Abstraction: Base. Status: Stable." and not xss.deprecated
    assert ("ChildOf", "74") in {(r.nature, r.cwe_id) for r in xss.related}
    assert any(example.reference.startswith("CVE-") for example in xss.observed_examples)
    owasp = entries["CWE-1347"]
    assert isinstance(owasp, Category) and owasp.header.startswith("Category. Status:") and owasp.members
    assert sum(isinstance(e, Weakness) for e in entries.values()) == 963


def test_records_are_those_of_the_whole_tree_blank_text_and_all() -> None:
    # The reader drops whitespace-only text nodes as it streams; a parse that keeps every node reads the same.
    tree = etree.parse(str(bundled_catalogue_path()))
    whole = [
        _weakness(e) if e.tag.endswith("}Weakness") else _category(e) for e in tree.iter("{*}Weakness", "{*}Category")
    ]
    assert sum(text is not None and not text.strip() for e in tree.iter() for text in (e.text, e.tail)) > 100_000
    assert list(read_entries(bundled_catalogue_path())) == whole


def test_every_probe_asks_in_the_layout_of_its_weakness_document() -> None:
    documents = dict(cwe_documents(bundled_catalogue_path(), categories=False))
    probes = cwe_probes(bundled_catalogue_path(), {"CWE-79", "CWE-89"}, count=40, choices=4, seed=3)
    assert {p.split for p in probes} == {"train", "validation"}
    for probe in probes:
        document = documents[probe.weakness]
        # The prompt and the true name are the document's first line; a description probe's suffix is
        # what follows it (the header and the start of the description).
        assert document.startswith(probe.prompt + probe.answer + "\n")
        if probe.suffix:
            assert document.startswith(probe.prompt + probe.answer + probe.suffix)
