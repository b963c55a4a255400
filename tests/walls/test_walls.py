"""The wall check on the real tree, and on small trees that breach a wall
(a check that passed everything would let every breach through)."""
import os
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CHECK = HERE / "check_walls.py"
SOURCE = HERE.parent.parent
BUILD = pathlib.Path(os.environ.get("CBD_BUILD_DIR", SOURCE / "build"))

# rooms.txt as the real build writes it, in the shape that keeps the rules.
GOOD_ROOMS = """\
core cbd_core cbd_common Boost::headers
breaker cbd_breaker cbd_core
config cbd_config cbd_breaker
dispatch cbd_dispatch cbd_breaker
net cbd_net cbd_dispatch cbd_config
http cbd_http cbd_dispatch cbd_config
backends/memory cbd_backend_memory cbd_dispatch
backends/persist cbd_backend_persist cbd_dispatch cbd_config
backends/redis cbd_backend_redis cbd_dispatch
app cbd_app cbd_net cbd_http cbd_backend_memory cbd_backend_persist cbd_backend_redis
"""


def run(source, rooms):
    return subprocess.run([sys.executable, CHECK, "--source", source, "--rooms", rooms],
                          capture_output=True, text=True)


def make_tree(tmp_path, files, rooms=GOOD_ROOMS):
    for relative, text in files.items():
        path = tmp_path / "daemon" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "rooms.txt").write_text(rooms)
    return run(tmp_path, tmp_path / "rooms.txt")


BASE = {
    "core/log.hpp": "#pragma once\n",
    "breaker/circuit_store.hpp": '#include "daemon/core/log.hpp"\n',
    "dispatch/dispatcher.hpp": '#include "daemon/breaker/circuit_store.hpp"\n',
    "net/session.hpp": '#include "daemon/dispatch/dispatcher.hpp"\n',
    "http/http_server.hpp": "#pragma once\n",
    "backends/memory/memory_store.hpp": "#pragma once\n",
    "backends/redis/redis_store.hpp": "#pragma once\n",
    "app/daemon.cpp": '#include "daemon/backends/memory/memory_store.hpp"\n'
                      '#include "daemon/net/session.hpp"\n',
}


def test_the_real_tree_keeps_its_walls():
    rooms = BUILD / "daemon" / "rooms.txt"
    if not rooms.is_file():
        pytest.fail(f"{rooms} is missing: configure the build first (CBD_BUILD_DIR)")
    result = run(SOURCE, rooms)
    assert result.returncode == 0, result.stderr
    assert "no include past a wall" in result.stdout


def test_a_tree_within_its_walls_passes(tmp_path):
    result = make_tree(tmp_path, BASE)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("relative, include, says", [
    ("dispatch/dispatcher.cpp", "net/session.hpp", "room dispatch includes"),
    ("net/session.cpp", "http/http_server.hpp", "room net includes"),
    ("breaker/policy.cpp", "dispatch/dispatcher.hpp", "room breaker includes"),
    ("backends/redis/redis_store.cpp", "backends/memory/memory_store.hpp",
     "room backends/redis includes"),
    ("http/http_server.cpp", "backends/redis/redis_store.hpp", "room http includes"),
    ("net/session.cpp", "net/gone.hpp", "does not exist"),
])
def test_an_include_past_a_wall_fails(tmp_path, relative, include, says):
    files = dict(BASE)
    files[relative] = f'#include "daemon/{include}"\n'
    result = make_tree(tmp_path, files)
    assert result.returncode == 1
    assert says in result.stderr
    assert relative in result.stderr


def test_a_link_past_a_wall_fails(tmp_path):
    rooms = GOOD_ROOMS.replace("dispatch cbd_dispatch cbd_breaker",
                               "dispatch cbd_dispatch cbd_breaker cbd_net")
    result = make_tree(tmp_path, BASE, rooms)
    assert result.returncode == 1
    assert "room dispatch: links net, which its rules forbid" in result.stderr


def test_a_backend_reached_through_another_room_fails(tmp_path):
    # net linking a backend reaches it even though no file includes it yet.
    rooms = GOOD_ROOMS.replace("net cbd_net cbd_dispatch cbd_config",
                               "net cbd_net cbd_dispatch cbd_config cbd_backend_memory")
    result = make_tree(tmp_path, BASE, rooms)
    assert result.returncode == 1
    assert "room net: links backends/memory" in result.stderr


def test_a_file_outside_every_room_fails(tmp_path):
    files = dict(BASE)
    files["loose.cpp"] = "int x;\n"
    result = make_tree(tmp_path, files)
    assert result.returncode == 1
    assert "daemon/loose.cpp: in no room" in result.stderr


def test_an_unplaced_room_fails(tmp_path):
    result = make_tree(tmp_path, BASE, GOOD_ROOMS + "extra cbd_extra cbd_core\n")
    assert result.returncode == 1
    assert "room extra: not placed in the rules" in result.stderr
