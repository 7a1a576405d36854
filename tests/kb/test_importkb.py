"""`python manage.py importkb SITE_KEY PATH…`: files, folders, re-imports, bad files and bad arguments."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command, execute_from_command_line
from django.core.management.base import CommandError
from django.db import connection

from backend.kb.models import Article, Passage
from backend.kb.search import search

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    # "--" first: a site key may start with "-" (keys are URL-safe base64).
    call_command("importkb", "--", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


REFUNDS_MD = """---
url: https://acme.example/help/refunds
---
# Refunds

We refund any order within 30 days.

## How to ask

Write to support with your order number.
"""

SHIPPING_HTML = """<!doctype html><html><head><title>Shipping | Acme</title>
<link rel="canonical" href="https://acme.example/help/shipping">
<script>var tracking = "do not index me";</script><style>.x{color:red}</style></head>
<body><nav>Home · Help</nav><h1>Shipping times</h1><p>Parcels reach Europe in <b>3&nbsp;days</b>.</p>
<h2>Tracking</h2><ul><li>Every parcel has a tracking link.</li><li>It arrives by email.</li></ul>
<footer>© Acme</footer></body></html>
"""


def test_it_imports_markdown_html_and_text_files_with_titles_and_urls(acme, tmp_path):
    md = write(tmp_path / "refunds.md", REFUNDS_MD)
    html = write(tmp_path / "shipping.html", SHIPPING_HTML)
    txt = write(tmp_path / "opening-hours.txt", "We answer from 9 to 5, Monday to Friday.\n")
    out, err = run(acme.key, str(md), str(html), str(txt))
    assert err == ""
    assert "3 created, 0 updated, 0 unchanged, 0 skipped" in out
    refunds = Article.objects.get(site=acme, title="Refunds")
    assert refunds.url == "https://acme.example/help/refunds"
    assert refunds.format == "markdown"
    assert refunds.source_path == str(md.resolve())
    assert [(p.heading, p.text) for p in refunds.passages.all()] == [
        ("", "We refund any order within 30 days."),
        ("How to ask", "Write to support with your order number."),
    ]
    shipping = Article.objects.get(site=acme, format="html")
    assert shipping.title == "Shipping times"
    assert shipping.url == "https://acme.example/help/shipping"
    # The text only: no tags, no script, no style, no navigation.
    assert "<" not in shipping.body and "do not index me" not in shipping.body and "color" not in shipping.body
    assert "Home" not in shipping.body and "© Acme" not in shipping.body
    assert "Parcels reach Europe in 3 days." in shipping.body
    assert "- Every parcel has a tracking link." in shipping.body
    hours = Article.objects.get(site=acme, format="text")
    assert hours.title == "Opening hours"
    assert hours.url == ""
    assert search(acme.pk, "when do you answer on monday?")[0].article_id == hours.pk


def test_html_without_h1_takes_its_title_from_the_title_tag(acme, tmp_path):
    page = write(tmp_path / "a.htm", "<html><head><title> Returns policy </title></head><body><p>Keep the box.</p>")
    run(acme.key, str(page))
    assert Article.objects.get(site=acme).title == "Returns policy"


def test_it_imports_folders_recursively_and_skips_hidden_files(acme, tmp_path):
    write(tmp_path / "help" / "a.md", "# Alpha\n\nFirst.")
    write(tmp_path / "help" / "deep" / "er" / "b.markdown", "# Beta\n\nSecond.")
    write(tmp_path / "help" / ".drafts" / "c.md", "# Draft\n\nNot yet.")
    write(tmp_path / "help" / ".DS_Store", b"\x00\x01")
    out, err = run(acme.key, str(tmp_path / "help"))
    assert err == ""
    assert "2 created" in out
    assert sorted(Article.objects.filter(site=acme).values_list("title", flat=True)) == ["Alpha", "Beta"]


def test_importing_again_updates_articles_instead_of_duplicating_them(acme, tmp_path):
    page = write(tmp_path / "refunds.md", REFUNDS_MD)
    run(acme.key, str(tmp_path))
    first = Article.objects.get(site=acme)
    out, _ = run(acme.key, str(tmp_path))
    assert "0 created, 0 updated, 1 unchanged" in out
    write(page, REFUNDS_MD.replace("30 days", "60 days").replace("# Refunds", "# Refunds and returns"))
    out, _ = run(acme.key, str(page))  # the same file, named directly this time
    assert "0 created, 1 updated" in out
    article = Article.objects.get(site=acme)
    assert article.pk == first.pk
    assert article.title == "Refunds and returns"
    assert "60 days" in article.body
    # The passages were re-split: the old text is gone from the index, the new one is found.
    assert Passage.objects.filter(article=article, text__contains="30 days").count() == 0
    assert search(acme.pk, "refund within 60 days")[0].article_id == article.pk
    assert not [hit for hit in search(acme.pk, "30") if hit.article_id == article.pk]


def test_a_broken_file_is_reported_by_name_and_skipped_while_the_others_import(acme, tmp_path):
    write(tmp_path / "good.md", "# Good\n\nFine text.")
    write(tmp_path / "latin1.md", "# Café\n\nCrème brûlée".encode("latin-1"))
    write(tmp_path / "empty.md", "---\nurl: https://acme.example/x\n---\n\n   \n")
    write(tmp_path / "frontmatter.md", "---\nurl: [unclosed\n---\n# Title\n\nText.")
    write(tmp_path / "listmatter.md", "---\n- a\n- b\n---\n# Title\n\nText.")
    write(tmp_path / "hostile-url.md", "---\nurl: javascript:alert(1)\n---\n# Click me\n\nText.")
    write(tmp_path / "picture.png", b"\x89PNG\r\n")
    with pytest.raises(CommandError, match="6 file"):
        run(acme.key, str(tmp_path))
    assert list(Article.objects.filter(site=acme).values_list("title", flat=True)) == ["Good"]


def test_the_summary_and_the_reasons_reach_the_terminal(acme, tmp_path, capsys):
    write(tmp_path / "good.md", "# Good\n\nFine text.")
    write(tmp_path / "latin1.md", "# Café".encode("latin-1"))
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "frontmatter.md", "---\nurl: [unclosed\n---\n# Title\n\nText.")
    write(tmp_path / "notes.docx", b"PK\x03\x04")
    with pytest.raises(SystemExit) as exit_info:
        execute_from_command_line(["manage.py", "importkb", "--", acme.key, str(tmp_path)])
    assert exit_info.value.code == 1
    out, err = capsys.readouterr()
    assert "1 created, 0 updated, 0 unchanged, 4 skipped" in out
    assert f"skipped {tmp_path / 'latin1.md'}: not UTF-8 text" in err
    assert f"skipped {tmp_path / 'empty.txt'}: empty" in err
    assert f"skipped {tmp_path / 'frontmatter.md'}: broken front matter" in err
    assert f"skipped {tmp_path / 'notes.docx'}: unsupported file type '.docx'" in err
    assert "4 file(s) could not be imported" in err


def explode_on(marker: str) -> None:
    """Make the database refuse any passage containing the marker, like a failing disk or constraint."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "CREATE TEMP TRIGGER kb_test_explode BEFORE INSERT ON kb_passage "
                f"WHEN new.text LIKE '%{marker}%' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
        else:
            cursor.execute(
                "CREATE FUNCTION kb_test_explode() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.text LIKE '%{marker}%' THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER kb_test_explode BEFORE INSERT ON kb_passage "
                "FOR EACH ROW EXECUTE FUNCTION kb_test_explode()"
            )


def test_a_file_that_fails_half_way_leaves_nothing_behind(acme, tmp_path):
    write(tmp_path / "a-good.md", "# Good\n\nFine text.")
    # The first passage would be written; the second fails: the article must not exist at all.
    write(tmp_path / "b-bad.md", "# Bad\n\nFirst section.\n\n## Second\n\nKABOOM here.")
    write(tmp_path / "c-good.md", "# Also good\n\nMore text.")
    explode_on("KABOOM")
    with pytest.raises(CommandError, match="1 file"):
        run(acme.key, str(tmp_path))
    assert sorted(Article.objects.filter(site=acme).values_list("title", flat=True)) == ["Also good", "Good"]
    assert not Passage.objects.filter(text__contains="First section").exists()
    assert search(acme.pk, "first section") == []


def test_a_failed_update_keeps_the_previous_version_whole(acme, tmp_path):
    page = write(tmp_path / "faq.md", "# FAQ\n\nOld answer.\n\n## More\n\nOld detail.")
    run(acme.key, str(page))
    write(page, "# FAQ\n\nNew answer.\n\n## More\n\nKABOOM detail.")
    explode_on("KABOOM")
    with pytest.raises(CommandError):
        run(acme.key, str(page))
    article = Article.objects.get(site=acme)
    assert "Old answer." in article.body
    assert list(article.passages.values_list("text", flat=True)) == ["Old answer.", "Old detail."]
    assert search(acme.pk, "old detail")[0].article_id == article.pk


def test_an_unknown_site_is_refused_before_anything_is_read(acme, tmp_path):
    write(tmp_path / "a.md", "# A\n\nText.")
    with pytest.raises(CommandError, match="No site has the key 'nope'"):
        run("nope", str(tmp_path))
    assert not Article.objects.exists()


def test_a_missing_path_is_refused_and_nothing_is_imported(acme, tmp_path):
    good = write(tmp_path / "a.md", "# A\n\nText.")
    with pytest.raises(CommandError, match=r"No such file or folder: .*missing\.md\. Nothing was imported"):
        run(acme.key, str(good), str(tmp_path / "missing.md"))
    assert not Article.objects.exists()


def test_it_needs_a_site_and_at_least_one_path(acme):
    with pytest.raises(CommandError, match="the following arguments are required: paths"):
        call_command("importkb", "--", acme.key)


def test_articles_of_one_site_never_answer_for_another(acme, globex, tmp_path):
    write(tmp_path / "secret.md", "# Internal pricing\n\nWholesale discount is 40 percent.")
    run(acme.key, str(tmp_path))
    assert search(acme.pk, "wholesale discount")
    assert search(globex.pk, "wholesale discount") == []


def test_relative_front_matter_urls_are_resolved_against_base_url(acme, tmp_path):
    write(tmp_path / "a.md", "---\nurl: /help/a/\ntitle: Custom title\n---\n# Heading\n\nText.")
    call_command(
        "importkb", "--base-url", "https://docs.acme.example", "--", acme.key, str(tmp_path), stdout=StringIO()
    )
    article = Article.objects.get(site=acme)
    assert (article.title, article.url) == ("Custom title", "https://docs.acme.example/help/a/")


def test_a_file_too_large_for_a_help_article_is_skipped(acme, tmp_path):
    from backend.kb.importer import MAX_FILE_BYTES

    write(tmp_path / "huge.txt", "word " * (MAX_FILE_BYTES // 5 + 1))
    write(tmp_path / "small.txt", "A small article.")
    with pytest.raises(CommandError, match="1 file"):
        run(acme.key, str(tmp_path))
    assert list(Article.objects.values_list("title", flat=True)) == ["Small"]
