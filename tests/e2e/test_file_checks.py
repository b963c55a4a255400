"""Files cbd opens are what they claim to be (daemon/core/safe_file.hpp):
the configuration file, a password file and the state file must be regular
files, read under a bound, opened without blocking; the socket's lock file
and its directory must be cbd's own. Each case here hung cbd, filled its
memory or made it write where another user chose before."""

import json
import os
import subprocess
import time
from pathlib import Path

from conftest import CBD, Client

NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


def write_config(path, threshold):
    path.write_text(json.dumps({"defaults": {"failureThreshold": threshold}}))
    return path


def threshold(d):
    return Client(d.sock).call({"op": "policy", "key": "k"})["policy"]["failureThreshold"]


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_cbd(workdir, *args, timeout=10):
    """Runs a cbd that is expected to refuse to start; a hang fails the test."""
    return subprocess.run([CBD, "--socket", str(workdir / "x.sock"), *args],
                          capture_output=True, text=True, timeout=timeout)


def wait_for_log(d, text, timeout=10):
    deadline = time.monotonic() + timeout
    while text not in d.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in d.log(), d.log()


# --- the configuration file ------------------------------------------------

def test_a_config_that_is_dev_zero_is_refused_at_start(workdir):
    link = workdir / "c.json"
    link.symlink_to("/dev/zero")
    for mode in ([], ["--check-config"]):
        started = time.monotonic()
        r = run_cbd(workdir, *mode, "--config", str(link))
        assert r.returncode != 0, r.stderr
        assert f"configuration file {link} is a character device, not a regular file" in r.stderr
        assert time.monotonic() - started < 5


def test_a_config_that_becomes_dev_zero_at_sighup_keeps_the_old_one(start_cbd, workdir):
    real = write_config(workdir / "real.json", 3)
    link = workdir / "c.json"
    link.symlink_to(real)  # an administrator's symlink is followed
    d = start_cbd("--config", str(link))
    assert threshold(d) == 3
    link.unlink()
    link.symlink_to("/dev/zero")
    d.proc.send_signal(1)  # SIGHUP
    wait_for_log(d, f"SIGHUP: configuration file {link} is a character device")
    assert "keeping the previous configuration" in d.log()
    # Still answering, with the old configuration, and no bigger for it.
    assert threshold(d) == 3
    assert rss_kb(d.proc.pid) < 100_000
    assert d.proc.poll() is None


def test_a_config_that_is_a_fifo_does_not_hang_cbd(start_cbd, workdir):
    fifo = workdir / "c.json"
    os.mkfifo(fifo)
    for mode in ([], ["--check-config"]):
        r = run_cbd(workdir, *mode, "--config", str(fifo))
        assert r.returncode != 0
        assert f"configuration file {fifo} is a FIFO, not a regular file" in r.stderr
    # Nor at SIGHUP: the loop keeps answering while nobody writes to it.
    fifo.unlink()
    write_config(fifo, 4)
    d = start_cbd("--config", str(fifo))
    fifo.unlink()
    os.mkfifo(fifo)
    d.proc.send_signal(1)
    wait_for_log(d, f"SIGHUP: configuration file {fifo} is a FIFO, not a regular file")
    assert threshold(d) == 4


def test_a_config_that_is_a_directory_is_refused(workdir):
    r = run_cbd(workdir, "--config", str(workdir))
    assert r.returncode != 0
    assert f"configuration file {workdir} is a directory, not a regular file" in r.stderr


def test_a_config_over_the_limit_is_refused(workdir):
    big = workdir / "big.json"
    big.write_text('{"defaults": {}}' + " " * (4 * 1024 * 1024))
    r = run_cbd(workdir, "--check-config", "--config", str(big))
    assert r.returncode == 1
    assert f"configuration file {big} is larger than 4194304 bytes" in r.stderr


# --- password files --------------------------------------------------------

def test_a_password_file_that_is_a_fifo_is_refused_without_waiting(workdir):
    fifo = workdir / "redis-password"
    os.mkfifo(fifo)
    for url, flag in (("unix:///nonexistent/redis.sock", "--redis-password-file"),
                      ("sentinel://127.0.0.1:1/m", "--redis-sentinel-password-file")):
        r = run_cbd(workdir, "--backend", "redis", "--redis", url, flag, str(fifo))
        assert r.returncode == 2, r.stderr
        assert f"cbd: {fifo} is a FIFO, not a regular file" in r.stderr
    r = run_cbd(workdir, "--backend", "redis", "--redis", "unix:///nonexistent/redis.sock",
                "--redis-password-file", "/dev/zero")
    assert r.returncode == 2 and "/dev/zero is a character device" in r.stderr


# --- the state file ----------------------------------------------------------

def test_a_state_file_that_is_a_fifo_or_a_symlink_is_refused(workdir):
    fifo = workdir / "state.db"
    os.mkfifo(fifo)
    r = run_cbd(workdir, "--state-file", str(fifo))
    assert r.returncode != 0
    assert f"state file {fifo} is a FIFO, not a regular file" in r.stderr
    fifo.unlink()
    victim = workdir / "victim"
    victim.write_text("data\n")
    fifo.symlink_to(victim)
    r = run_cbd(workdir, "--state-file", str(fifo))
    assert r.returncode != 0
    assert f"state file {fifo} is a symbolic link" in r.stderr
    wal = workdir / "other.db-wal"
    wal.symlink_to(victim)
    r = run_cbd(workdir, "--state-file", str(workdir / "other.db"))
    assert r.returncode != 0 and f"state file {wal} is a symbolic link" in r.stderr
    assert victim.read_text() == "data\n"


# --- the socket's lock file and directory -----------------------------------

def shared_dir(workdir):
    os.chmod(workdir, 0o755)  # let nobody reach it
    d = workdir / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


def test_another_users_symlink_as_the_lock_file_is_not_followed(start_cbd, workdir):
    # The measurement: as nobody, in a sticky world-writable directory, a
    # link where cbd's lock file goes. Before, cbd followed it and wrote its
    # pid into the victim. With fs.protected_symlinks=1 the kernel would
    # refuse to follow it anyway (EACCES): the message below is cbd's own,
    # so the test shows cbd's check, not the kernel's, either way.
    d = shared_dir(workdir)
    victim = workdir / "victim"
    victim.write_text("data\n")
    lock = d / "cbd.sock.lock"
    subprocess.run(NOBODY + ["ln", "-s", str(victim), str(lock)], check=True)
    r = subprocess.run([CBD, "--socket", str(d / "cbd.sock")], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0
    assert f"lock file {lock} is a symbolic link" in r.stderr
    assert victim.read_text() == "data\n"
    assert not (d / "cbd.sock").exists()


def test_another_users_lock_file_is_not_truncated(workdir):
    d = shared_dir(workdir)
    lock = d / "cbd.sock.lock"
    subprocess.run(NOBODY + ["sh", "-c", f"echo theirs > {lock}"], check=True)
    r = subprocess.run([CBD, "--socket", str(d / "cbd.sock")], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0
    # Refused either by the kernel (fs.protected_regular) or by cbd; never
    # written to.
    assert f"lock file {lock}" in r.stderr
    assert lock.read_text() == "theirs\n"
    fifo = d / "fifo.sock.lock"
    subprocess.run(NOBODY + ["mkfifo", str(fifo)], check=True)
    r = subprocess.run([CBD, "--socket", str(d / "fifo.sock")], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0 and f"lock file {fifo}" in r.stderr


def test_a_lock_file_with_another_link_is_not_written(workdir):
    victim = workdir / "victim"
    victim.write_text("data\n")
    os.link(victim, workdir / "cbd.sock.lock")
    r = subprocess.run([CBD, "--socket", str(workdir / "cbd.sock")], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0 and "has 2 hard links" in r.stderr
    assert victim.read_text() == "data\n"


def test_a_directory_another_group_may_write_is_refused(start_cbd, workdir):
    d = workdir / "group"
    d.mkdir()
    os.chown(d, 0, 65534)
    os.chmod(d, 0o775)
    r = subprocess.run([CBD, "--socket", str(d / "cbd.sock")], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0
    assert f"refusing to serve from {d} (mode 0775" in r.stderr and "group 65534" in r.stderr
    # With the sticky bit, cbd's own entries are safe: it serves.
    os.chmod(d, 0o1775)
    served = start_cbd(sock=d / "cbd.sock")
    assert Client(served.sock).call({"op": "ping"})["ok"]
    assert (d / "cbd.sock.lock").stat().st_uid == os.geteuid()
