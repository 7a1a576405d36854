"""Splitting articles into passages, and reading HTML through a real parser."""

from __future__ import annotations

from backend.kb.text import chunks, first_heading, html_to_text, markdown_sections, unwrap, windows


def test_markdown_is_split_at_headings_but_not_inside_code_fences():
    body = "# Title\n\nIntro.\n\n## Install\n\n```sh\n# not a heading\nmake run\n```\n\n### Deeper ###\n\nText."
    sections = markdown_sections(body)
    assert [(s.heading, s.text) for s in sections] == [
        ("Title", "Intro."),
        ("Install", "```sh\n# not a heading\nmake run\n```"),
        ("Deeper", "Text."),
    ]
    assert first_heading("## Second level first\n\n# Top\n") == "Top"
    assert first_heading("no heading\n#hashtag") == ""


def test_long_sections_become_windows_of_whole_paragraphs_within_the_limit():
    paragraphs = [f"Paragraph {i} " + "word " * 30 for i in range(10)]
    out = windows("\n\n".join(paragraphs), 400)
    assert len(out) > 1
    assert all(len(w) <= 400 for w in out)
    assert "\n\n".join(out).split() == "\n\n".join(paragraphs).split()  # nothing lost or repeated


def test_a_single_huge_paragraph_is_split_at_words():
    out = windows("x" * 5 + " " + "word " * 500, 200)
    assert all(len(w) <= 200 for w in out)
    assert sum(w.count("word") for w in out) == 500


def test_the_title_section_has_no_heading_and_empty_sections_keep_their_heading():
    result = chunks("# Guide\n\nHello.\n\n## Empty\n\n## Full\n\nBody.", "Guide", 1000)
    assert [(c.heading, c.text) for c in result] == [("", "Hello."), ("Empty", "Empty"), ("Full", "Body.")]


def test_html_text_keeps_headings_lists_and_preformatted_text_and_drops_the_rest():
    html = """<html><head><title>T</title><style>p{}</style></head><body>
    <header><h1>Main <em>title</em></h1></header>
    <p>One   two
    three &amp; four &lt;b&gt;</p><script>alert(1)</script>
    <pre>  indented
      code</pre>
    <h3>Sub</h3><ol><li>first</li><li>second</li></ol><img src=x onerror=alert(1)><br/>tail
    <svg><text>svg text</text></svg><noscript>nojs</noscript>
    </body></html>"""
    doc = html_to_text(html)
    assert doc.title == "Main title"
    assert doc.text.split("\n\n") == [
        "# Main title",
        "One two three & four <b>",
        "  indented\n      code",
        "### Sub",
        "- first",
        "- second",
        "tail",
    ]


def test_broken_html_is_still_read():
    doc = html_to_text("<p>unclosed <b>bold <div>block</p></span>trailing")
    assert "unclosed bold" in doc.text and "block" in doc.text and "trailing" in doc.text


def test_unwrap_joins_wrapped_prose_but_keeps_code_lists_and_tables():
    text = (
        "One line\nwrapped here.\n\n```sh\nmake run\nmake test\n```\n\n- item one\n- item two\n\n| a | b |\n|---|---|"
    )
    assert unwrap(text) == (
        "One line wrapped here.\n\n```sh\nmake run\nmake test\n```\n\n- item one\n- item two\n\n| a | b |\n|---|---|"
    )


def test_unwrap_leaves_code_blocks_with_blank_lines_alone():
    text = "```py\ndef a():\n    pass\n\n\ndef b():\n    pass\n```\n\nAfter\nthe code."
    assert unwrap(text) == "```py\ndef a():\n    pass\n\n\ndef b():\n    pass\n```\n\nAfter the code."
