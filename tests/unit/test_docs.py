"""The docs point only at what the repository holds: every relative link of README.md and
docs/*.md leads to a file, every docs/<name>.md they name exists, and none sends a reader
to a file outside the repository (REFERENCE.md is the developers', not the users')."""
import glob
import os
import re

from tests.conftest import REPO

PAGES = [os.path.join(REPO, "README.md"), *glob.glob(os.path.join(REPO, "docs", "*.md")),
         os.path.join(REPO, "tests", "README.md")]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
NAMED = re.compile(r"\bdocs/[\w-]+\.md\b")


def test_every_link_and_named_page_exists():
    broken = []
    for page in PAGES:
        text = open(page, encoding="utf-8").read()
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):  # a web address: not ours to check offline
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(page), target))
            if not os.path.exists(path):
                broken.append(f"{os.path.relpath(page, REPO)}: ({target})")
        for named in NAMED.findall(text):
            if not os.path.exists(os.path.join(REPO, named)):
                broken.append(f"{os.path.relpath(page, REPO)}: {named}")
        if "REFERENCE.md" in text:
            broken.append(f"{os.path.relpath(page, REPO)}: REFERENCE.md is not in the repository")
    assert broken == []
