"""Every variable the settings read from the environment is documented for the people who set them."""

from __future__ import annotations

import re

from tests.processes import ROOT


def test_every_environment_variable_of_the_settings_is_in_the_readme_or_the_docs():
    source = (ROOT / "backend" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|int|float|bool|list)\(\s*"([A-Z0-9_]+)"', source))
    assert "DATABASE_URL" in names and len(names) > 40  # the pattern still finds what settings.py reads
    docs = (ROOT / "README.md").read_text() + "".join(path.read_text() for path in (ROOT / "docs").glob("*.md"))
    undocumented = sorted(name for name in names if f"`{name}`" not in docs and f"{name}=" not in docs)
    assert undocumented == []
