"""cbd is licensed under the Apache License 2.0, and every place that must
say so says the same: the root LICENSE, each client's copy of it (npm,
setuptools and Go's module tooling read the one in their own folder), the
Node and Python manifests, debian/copyright (DEP-5) and the man pages."""
import json
import pathlib
import re
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
LICENSE = ROOT / "LICENSE"


def test_the_root_licence_is_apache_2():
    text = LICENSE.read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


@pytest.mark.parametrize("client", ["node", "python", "go"])
def test_each_clients_copy_is_the_root_licence(client):
    copy = ROOT / "clients" / client / "LICENSE"
    assert copy.read_bytes() == LICENSE.read_bytes(), f"{copy} differs from LICENSE: copy it again"


def test_the_manifests_name_apache_2():
    package = json.loads((ROOT / "clients/node/package.json").read_text())
    assert package["license"] == "Apache-2.0"
    project = tomllib.loads((ROOT / "clients/python/pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert "License :: OSI Approved :: Apache Software License" in project["classifiers"]


def test_debian_copyright_is_dep5_apache_2():
    text = (ROOT / "debian/copyright").read_text()
    assert text.startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    files = re.search(r"^Files: \*\n(?:.+\n)*?License: (\S+)", text, re.M)
    assert files and files.group(1) == "Apache-2.0"
    assert re.search(r"^License: Apache-2.0\n .+", text, re.M), "no stand-alone licence paragraph"
    assert "/usr/share/common-licenses/Apache-2.0" in text


@pytest.mark.parametrize("page", ["cbd.8.scd", "cbctl.1.scd", "cbd.json.5.scd"])
def test_each_man_page_names_the_licence(page):
    text = (ROOT / "docs/man" / page).read_text()
    section = text.split("# COPYRIGHT", 1)
    assert len(section) == 2, f"{page} has no COPYRIGHT section"
    assert "Apache\nLicense, Version 2.0" in section[1] or "Apache License, Version 2.0" in section[1]
