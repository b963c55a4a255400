"""`pip install ./clients/python` works offline into a fresh venv, ships
py.typed, and the installed package talks to cbd."""
from __future__ import annotations

import shutil
import subprocess
import sys
import venv

from conftest import CLIENT_ROOT


def test_pip_installs_the_package_offline_into_a_venv(cbd, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Build from a copy: pip builds in the source tree and leaves build/ and
    # *.egg-info behind.
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(CLIENT_ROOT / "pyproject.toml", source)
    shutil.copy(CLIENT_ROOT / "README.md", source)
    shutil.copytree(CLIENT_ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__"))
    env_dir = tmp_path / "venv"
    # --system-site-packages: setuptools comes from the system (Debian's
    # python3-setuptools), so nothing is downloaded; --no-build-isolation
    # stops pip from fetching setuptools into a build environment.
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = str(env_dir / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--no-build-isolation", "--quiet", str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    check = subprocess.run(
        [
            python,
            "-c",
            "import sys, pathlib, cbd_client; "
            "where = pathlib.Path(cbd_client.__file__).parent; "
            "assert where.is_relative_to(sys.prefix), where; "
            "assert (where / 'py.typed').is_file(); "
            "print(cbd_client.Client(sys.argv[1]).ping()['protocol'])",
            cbd.socket,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert int(check.stdout) >= 7
    assert sys.version_info >= (3, 11)
