"""bench/stuck_watcher.py [BUILD_DIR]: does a watcher that never reads slow
anyone down? Runs the same cbbench load twice while another client flips a
circuit (so events flow), the second time with a watcher that never reads,
and prints both throughputs and their ratio."""
import json, os, socket, subprocess, sys, threading, time

build = sys.argv[1] if len(sys.argv) > 1 else "build"
sock = "/tmp/cbd-stuck-watcher.sock"
for f in (sock, sock + ".lock"):
    try: os.unlink(f)
    except FileNotFoundError: pass
d = subprocess.Popen([f"{build}/daemon/cbd", "--socket", sock, "--log-level", "error"])
time.sleep(0.3)
stop = False
def flipper():
    s = socket.socket(socket.AF_UNIX); s.connect(sock); f = s.makefile("rb")
    batch = b"".join(json.dumps({"op": "transition", "key": "flip", "to": t}).encode() + b"\n" for t in ("open", "closed") * 50)
    while not stop:
        s.sendall(batch)
        for _ in range(100): f.readline()
        time.sleep(0.01)
t = threading.Thread(target=flipper); t.start()
def bench():
    r = subprocess.run([f"{build}/bench/cbbench", "--socket", sock, "-c", "50", "-d", "5", "--op", "failure", "--json"], capture_output=True, text=True)
    if not r.stdout:
        sys.exit("cbbench failed: " + r.stderr)
    return json.loads(r.stdout)
a = bench()
w = socket.socket(socket.AF_UNIX); w.connect(sock); w.sendall(b'{"op":"watch"}\n')  # never read
time.sleep(0.5)
b = bench()
stop = True; t.join()
st = socket.socket(socket.AF_UNIX); st.connect(sock); st.sendall(b'{"op":"stats"}\n'); stats = json.loads(st.makefile().readline())
print(f"no watcher: {a['opsPerSec']:.0f}/s p99 {a['p99Us']}us; stuck watcher: {b['opsPerSec']:.0f}/s p99 {b['p99Us']}us; ratio {b['opsPerSec']/a['opsPerSec']:.2f}; events dropped {stats['events']['dropped']}, watchers {stats['watchers']}")
d.terminate(); d.wait()
