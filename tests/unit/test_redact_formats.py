"""Every credential format prepare knows is redacted wherever it occurs, and `docs/secrets.md` says truly who
catches each: a detect-secrets plugin where one does (run here on the sample), our own pattern where none does."""

from __future__ import annotations

from pathlib import Path

import pytest

from steps.prepare.redact import redact
from tests.support.corpus_files import prose
from tests.support.secret_formats import EVERY_OCCURRENCE, FORMATS

DOC = Path(__file__).resolve().parents[2] / "docs" / "secrets.md"


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_each_format_is_redacted_and_the_text_around_it_kept(name: str) -> None:
    sample = FORMATS[name]
    text = f"{prose(1, 20)}\n{sample.text}\n{prose(2, 20)}"
    redacted, counts = redact(text)
    leaked = [secret for secret in sample.secrets if secret in redacted]
    assert not leaked, f"{name}: {redacted!r}"
    assert counts and "<SECRET:" in redacted
    assert redacted.startswith(prose(1, 20)) and redacted.endswith(prose(2, 20))


@pytest.mark.parametrize("name", sorted(EVERY_OCCURRENCE))
def test_every_occurrence_on_a_line_is_redacted(name: str) -> None:
    sample = EVERY_OCCURRENCE[name]
    redacted, counts = redact(sample.text)
    assert not [secret for secret in sample.secrets if secret in redacted], redacted
    assert sum(counts.values()) >= 2, (counts, redacted)


def test_the_issues_two_lines_lose_both_passwords() -> None:
    json_line = '{"db": {"password": "a"}, "smtp": {"password": "Summer2023!"}}'
    assert redact(json_line) == (
        '{"db": {"password": "<SECRET:password>"}, "smtp": {"password": "<SECRET:password>"}}',
        {"password": 2},
    )
    env_line = "DB_PASSWORD=x SMTP_PASSWORD=Summer2023! ./run.sh"
    assert redact(env_line) == (
        "DB_PASSWORD=<SECRET:password> SMTP_PASSWORD=<SECRET:password> ./run.sh",
        {"password": 2},
    )


# Short values count only in an unambiguous credential position; words and placeholders after a name stay.
SHORT_VALUE_PROSE = [
    "Password: The product stores it in plain text.",
    "The password: rotate it yearly, says the policy.",
    "password = getpass.getpass()",
    'password = os.environ["DB_PASSWORD"]',
    "DB_PASSWORD=${DB_PASSWORD} ./run.sh",
    'password: "{{ vault_db_password }}"',
    "<Password></Password>",
    'secret = ""',
    "--password <your-password>",
    "token: none",
    "key: value",
    "api_key = None",
    "password: ********",
    "Use the flag --password-file /run/secrets/db to read it.",
]


@pytest.mark.parametrize("text", SHORT_VALUE_PROSE)
def test_words_and_placeholders_in_credential_position_stay(text: str) -> None:
    assert redact(text) == (text, {})


def _documented_rows() -> dict[str, tuple[str, str]]:
    """Format name -> (our pass, detect-secrets plugins), from the table in docs/secrets.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] in FORMATS:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


def test_the_docs_table_lists_every_format() -> None:
    assert sorted(_documented_rows()) == sorted(FORMATS)


def _detect_secrets_finds(plugin_name: str, text: str, secrets: tuple[str, ...]) -> bool:
    """Whether detect-secrets' own plugin, run as its scanner runs it (line by line), reports the sample."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.keyword import CONFIG_DENYLIST_REGEX_TO_GROUP

    plugins = {cls.__name__: cls for cls in get_mapping_from_secret_type_to_class().values()}
    plugin = plugins[plugin_name]()
    for line in text.splitlines():
        if plugin_name == "KeywordDetector":
            found = list(plugin.analyze_string(line, CONFIG_DENYLIST_REGEX_TO_GROUP))
        else:
            found = list(plugin.analyze_string(line))
        if plugin_name == "PrivateKeyDetector" and found:
            return True  # it reports the header; the block is the secret
        if any(secret in value for value in found for secret in secrets):
            return True
    return False


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_the_docs_name_every_detect_secrets_plugin_that_finds_the_format(name: str) -> None:
    """The third column is what running every detect-secrets 1.5.0 plugin on the sample gives, no more, no less:
    where it says "none", we had to write the pattern."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    sample = FORMATS[name]
    finders = sorted(
        cls.__name__
        for cls in get_mapping_from_secret_type_to_class().values()
        if _detect_secrets_finds(cls.__name__, sample.text, sample.secrets)
    )
    documented = _documented_rows()[name][1]
    assert (documented.split(", ") if documented != "none" else []) == finders, (name, documented, finders)
