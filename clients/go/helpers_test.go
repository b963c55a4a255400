package cbd

// Test helpers: a real cbd on a temporary socket, and this test binary run
// again as a child process (CBD_GO_TEST_CHILD) for the multi-process cases.

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const childEnv = "CBD_GO_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		os.Exit(runChild(mode, os.Args[len(os.Args)-3:]))
	}
	os.Exit(m.Run())
}

// runChild is a child process's whole life: "failures SOCKET KEY N" records
// N failures; "probe SOCKET KEY -" waits for a line on stdin (so that every
// child is connected before the race starts), acquires once and prints
// allowed or denied.
func runChild(mode string, args []string) int {
	if strings.HasPrefix(mode, "mirror-") {
		return runMirrorChild(mode, args)
	}
	socket, key := args[0], args[1]
	ctx := context.Background()
	c, err := Dial(ctx, socket, WithTimeout(30*time.Second))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer c.Close()
	switch mode {
	case "failures":
		n, err := strconv.Atoi(args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		for i := 0; i < n; i++ {
			if _, err := c.Failure(ctx, key); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 1
			}
		}
		return 0
	case "probe":
		if _, err := c.Ping(ctx); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("ready")
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		a, err := c.Acquire(ctx, key)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if a.Allowed {
			fmt.Println("allowed")
		} else {
			fmt.Println("denied")
		}
		return 0
	}
	fmt.Fprintln(os.Stderr, "unknown child mode", mode)
	return 2
}

// child starts this test binary as a child process in mode.
func child(t *testing.T, mode string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	cmd.Stderr = os.Stderr
	return cmd
}

// cbdBuildDir is where the built cbd is: $CBD_BUILD_DIR, else the
// repository's build/.
func cbdBinary(t *testing.T, name string) string {
	t.Helper()
	dir := os.Getenv("CBD_BUILD_DIR")
	if dir == "" {
		dir = filepath.Join("..", "..", "build")
	}
	path, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s not found (set CBD_BUILD_DIR to the build directory): %v", name, err)
	}
	return path
}

type daemon struct {
	t      *testing.T
	socket string
	args   []string
	cmd    *exec.Cmd
	exited chan struct{}
}

// startCbd starts cbd on a socket in a new temporary directory (short, so
// that the path fits a sockaddr_un) and stops it when the test ends.
func startCbd(t *testing.T, args ...string) *daemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "cbd-go-")
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, socket: filepath.Join(dir, "cbd.sock"), args: args}
	t.Cleanup(func() {
		d.stop()
		os.RemoveAll(dir)
	})
	d.start()
	return d
}

func (d *daemon) start() {
	d.t.Helper()
	d.cmd = exec.Command(cbdBinary(d.t, "daemon/cbd"), append([]string{"--socket", d.socket, "--log-level", "warn"}, d.args...)...)
	d.cmd.Stderr = os.Stderr
	// Should the test binary die without its cleanups, cbd dies with it.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	exited := make(chan struct{})
	d.exited = exited
	go func() {
		_ = d.cmd.Wait()
		close(exited)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if nc, err := net.Dial("unix", d.socket); err == nil {
			nc.Close()
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("cbd did not listen on %s within 10 s", d.socket)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop kills cbd and waits for it to exit; the socket file goes with it
// (SIGTERM: cbd removes it).
func (d *daemon) stop() {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(os.Interrupt)
	select {
	case <-d.exited:
	case <-time.After(5 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

// cbctl runs the real CLI against d.
func (d *daemon) cbctl(args ...string) string {
	d.t.Helper()
	out, err := exec.Command(cbdBinary(d.t, "cli/cbctl"), append([]string{"--socket", d.socket}, args...)...).CombinedOutput()
	if err != nil {
		d.t.Fatalf("cbctl %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func dial(t *testing.T, d *daemon, opts ...Option) *Client {
	t.Helper()
	c, err := Dial(context.Background(), d.socket, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// must returns v, or fails the test by panicking with err (the testing
// package reports the panic and still runs the cleanups that stop cbd).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
