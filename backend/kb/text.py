"""Turn article bodies into titled sections and passage-sized windows for retrieval."""

from __future__ import annotations

import re
from dataclasses import dataclass
from html.parser import HTMLParser

# Markdown ATX headings ("## Title ##"); setext headings are rare in help articles and read as text.
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")


@dataclass(frozen=True)
class Section:
    heading: str
    text: str


@dataclass(frozen=True)
class Chunk:
    heading: str
    text: str


def clean(text: str) -> str:
    """Normalise line endings and drop NUL characters, which PostgreSQL text cannot hold."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def markdown_sections(body: str) -> list[Section]:
    """Split Markdown (or plain text) at its headings, ignoring '#' lines inside fenced code."""
    sections: list[Section] = []
    heading = ""
    lines: list[str] = []
    fenced = False

    def flush() -> None:
        text = "\n".join(lines).strip()
        if text or heading:
            sections.append(Section(heading, text))

    for line in clean(body).split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match:
            flush()
            heading = match.group(2).strip()
            lines = []
        else:
            lines.append(line)
    flush()
    return sections


def first_heading(body: str) -> str:
    """Return the first level-one heading, else the first heading of any level, else ''."""
    headings = []
    fenced = False
    for line in clean(body).split("\n"):
        if FENCE.match(line):
            fenced = not fenced
        match = None if fenced else HEADING.match(line)
        if match:
            if len(match.group(1)) == 1:
                return match.group(2).strip()
            headings.append(match.group(2).strip())
    return headings[0] if headings else ""


def paragraphs(text: str) -> list[str]:
    blocks = re.split(r"\n[ \t]*\n", text)
    return [block.strip() for block in blocks if block.strip()]


LIST_ITEM = re.compile(r"^\s*([-*+]|\d+[.)])\s")


def unwrap(text: str) -> str:
    """Join the hard-wrapped lines of each paragraph, leaving code blocks, lists and tables as they are."""
    out = []
    fenced = False  # inside a code block that spans blank lines
    for block in re.split(r"\n[ \t]*\n", text):
        lines = block.split("\n")
        fences = sum(1 for line in lines if FENCE.match(line))
        keep = fenced or fences or any(LIST_ITEM.match(line) or line.lstrip().startswith("|") for line in lines)
        out.append(block if keep else " ".join(line.strip() for line in lines if line.strip()))
        fenced = fenced != (fences % 2 == 1)
    return "\n\n".join(out)


def windows(text: str, limit: int) -> list[str]:
    """Group paragraphs into windows of at most `limit` characters; split longer paragraphs at words."""
    out: list[str] = []
    current = ""
    for block in paragraphs(text):
        pieces = [block]
        if len(block) > limit:
            pieces, piece = [], ""
            for word in block.split():
                if piece and len(piece) + 1 + len(word) > limit:
                    pieces.append(piece)
                    piece = word
                else:
                    piece = f"{piece} {word}" if piece else word
            if piece:
                pieces.append(piece)
        for piece in pieces:
            if current and len(current) + 2 + len(piece) > limit:
                out.append(current)
                current = piece
            else:
                current = f"{current}\n\n{piece}" if current else piece
    if current:
        out.append(current)
    return out


def chunks(body: str, title: str, limit: int) -> list[Chunk]:
    """Split a Markdown or text body into passages: one per section, windowed when a section is long."""
    out: list[Chunk] = []
    for section in markdown_sections(body):
        heading = "" if section.heading == title else section.heading
        for window in windows(section.text, limit) or ([heading] if heading else []):
            out.append(Chunk(heading, window))
    return out


class _TextExtractor(HTMLParser):
    """Collect an HTML page's readable text, with headings written as Markdown headings."""

    SKIP = {"script", "style", "noscript", "template", "svg", "nav", "footer", "head"}
    BLOCKS = {
        "p", "div", "section", "article", "main", "header", "ul", "ol", "li", "table", "tr", "td", "th",
        "blockquote", "pre", "dl", "dt", "dd", "figure", "figcaption", "hr", "br", "form", "details", "summary",
    }  # fmt: skip
    HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[str] = []
        self.current: list[str] = []
        self.skipping = 0
        self.preformatted = 0
        self.in_title = False
        self.title_parts: list[str] = []
        self.canonical = ""
        self.heading_level = 0

    def flush(self) -> None:
        raw = "".join(self.current)
        text = raw.strip("\n") if self.preformatted else " ".join(raw.split())
        if text.strip():
            if self.heading_level:
                text = "#" * self.heading_level + " " + text
            self.blocks.append(text)
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "title":
            self.in_title = True
        elif tag == "link" and "canonical" in values.get("rel", "").lower().split():
            self.canonical = self.canonical or values.get("href", "").strip()
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.HEADINGS:
            self.flush()
            self.heading_level = self.HEADINGS[tag]
        elif tag in self.BLOCKS:
            self.flush()
            if tag == "pre":
                self.preformatted += 1
            elif tag == "li" and not self.skipping:
                self.current.append("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag in self.SKIP:
            self.skipping -= 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.HEADINGS:
            self.flush()
            self.heading_level = 0
        elif tag in self.BLOCKS:
            self.flush()
            if tag == "pre":
                self.preformatted = max(0, self.preformatted - 1)

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title_parts.append(data)
        elif not self.skipping:
            self.current.append(data)


@dataclass(frozen=True)
class HtmlDocument:
    text: str  # readable text, headings as Markdown "#" lines
    title: str  # the first <h1>, else <title>
    canonical: str  # <link rel="canonical" href>, if any


def html_to_text(html: str) -> HtmlDocument:
    """Extract the readable text of an HTML document with the standard library's HTML parser."""
    parser = _TextExtractor()
    parser.feed(clean(html))
    parser.close()
    parser.flush()
    text = "\n\n".join(parser.blocks)
    title = first_heading(text) if any(b.startswith("# ") for b in parser.blocks) else ""
    return HtmlDocument(
        text=text, title=title or " ".join("".join(parser.title_parts).split()), canonical=parser.canonical
    )
