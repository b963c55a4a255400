#!/usr/bin/env python3
"""The walls between daemon/'s rooms, checked.

Each folder of daemon/ is a room and a CMake library (daemon/CMakeLists.txt
writes what each links to $BUILD_DIR/daemon/rooms.txt). Two checks:

1. The link graph keeps the rules below (docs/ARCHITECTURE.md says why):
   adding `cbd_net` to the dispatcher's link line fails here.
2. No file includes a header of a room its own room does not link (directly
   or through another room): the build's link lines are the walls, and an
   include past them fails here even where the final link would succeed.

Usage: check_walls.py --source DIR --rooms FILE. Prints every breach and
exits 1 if there is one; exits 0 and prints a summary otherwise.
"""
import argparse
import pathlib
import re
import sys

# What each room may reach (through its links, transitively). A room not
# named here is a breach of its own: every folder must be placed.
ALLOWED = {
    "core": set(),
    "breaker": {"core"},
    "config": {"core", "breaker"},
    "dispatch": {"core", "breaker"},
    "net": {"core", "breaker", "config", "dispatch"},
    "http": {"core", "breaker", "config", "dispatch"},
    "backends/memory": {"core", "breaker", "dispatch"},
    "backends/persist": {"core", "breaker", "config", "dispatch"},
    "backends/redis": {"core", "breaker", "dispatch"},
    "app": {"core", "breaker", "config", "dispatch", "net", "http",
            "backends/memory", "backends/persist", "backends/redis"},
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"daemon/([^"]+)"', re.MULTILINE)


def read_rooms(path):
    """room -> (target, [linked targets]) from rooms.txt."""
    rooms = {}
    for line in pathlib.Path(path).read_text().splitlines():
        words = line.split()
        if words:
            rooms[words[0]] = (words[1], words[2:])
    return rooms


def link_closure(rooms):
    """room -> every room it reaches through its link lines."""
    by_target = {target: room for room, (target, _) in rooms.items()}
    closure = {}
    for room in rooms:
        seen, todo = set(), [room]
        while todo:
            for link in rooms[todo.pop()][1]:
                other = by_target.get(link)
                if other and other not in seen:
                    seen.add(other)
                    todo.append(other)
        seen.discard(room)
        closure[room] = seen
    return closure


def room_of(relative, rooms):
    """The room a path under daemon/ belongs to (the longest match)."""
    best = None
    for room in rooms:
        if relative == room or relative.startswith(room + "/"):
            if best is None or len(room) > len(best):
                best = room
    return best


def check(source, rooms_file):
    source = pathlib.Path(source)
    daemon = source / "daemon"
    rooms = read_rooms(rooms_file)
    closure = link_closure(rooms)
    breaches = []

    for room in rooms:
        if room not in ALLOWED:
            breaches.append(f"room {room}: not placed in the rules (tests/walls/check_walls.py)")
            continue
        for far in sorted(closure[room] - ALLOWED[room]):
            breaches.append(f"room {room}: links {far}, which its rules forbid")
    for room in ALLOWED:
        if room not in rooms:
            breaches.append(f"room {room}: in the rules but not a library in daemon/CMakeLists.txt")

    files = 0
    for path in sorted(daemon.rglob("*")):
        if path.suffix not in (".cpp", ".hpp"):
            continue
        files += 1
        relative = path.relative_to(daemon).as_posix()
        room = room_of(relative, rooms)
        if room is None:
            breaches.append(f"daemon/{relative}: in no room (every file lives in a room's folder)")
            continue
        text = path.read_text(errors="replace")
        for match in INCLUDE.finditer(text):
            target = match.group(1)
            line = text.count("\n", 0, match.start()) + 1
            where = f"daemon/{relative}:{line}"
            if not (daemon / target).is_file():
                breaches.append(f'{where}: includes "daemon/{target}", which does not exist')
                continue
            other = room_of(target, rooms)
            if other is None:
                breaches.append(f'{where}: includes "daemon/{target}", which is in no room')
            elif other != room and other not in closure[room]:
                breaches.append(f'{where}: room {room} includes "daemon/{target}" '
                                f'of room {other}, which it does not link')
    return files, breaches


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="the source tree (holds daemon/)")
    parser.add_argument("--rooms", required=True, help="$BUILD_DIR/daemon/rooms.txt")
    args = parser.parse_args()
    files, breaches = check(args.source, args.rooms)
    for breach in breaches:
        print(breach, file=sys.stderr)
    if breaches:
        print(f"check_walls: {len(breaches)} breach(es)", file=sys.stderr)
        return 1
    print(f"check_walls: {files} files in {len(ALLOWED)} rooms, no include past a wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
