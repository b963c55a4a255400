// go_overhead: the Go client's per-call overhead. Times 10,000 sequential
// `failure` calls through cbd.Client against the same calls made by a
// raw-socket loop (write a line, read a line) in Go, and prints the ratio.
//
//	cd bench/clients/go_overhead && go run . [-cbd BUILD/daemon/cbd | -socket PATH] [-n 10000]
//
// Without -socket it starts its own cbd (default $CBD_BUILD_DIR/daemon/cbd,
// else ../../../build/daemon/cbd) on a temporary socket. Each side runs
// -rounds times, alternating, after a warm-up; the best round of each is
// compared, so that a noisy neighbour on the machine inflates neither.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	cbd "cbd.local/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go_overhead:", err)
		os.Exit(1)
	}
}

// run is the whole benchmark; it returns (rather than exits) on failure, so
// that the cbd it started is always stopped.
func run() error {
	defaultCbd := filepath.Join("..", "..", "..", "build", "daemon", "cbd")
	if dir := os.Getenv("CBD_BUILD_DIR"); dir != "" {
		defaultCbd = filepath.Join(dir, "daemon", "cbd")
	}
	cbdPath := flag.String("cbd", defaultCbd, "the cbd binary to start (unless -socket)")
	socket := flag.String("socket", "", "a running cbd's socket (default: start one)")
	calls := flag.Int("n", 10000, "sequential failure calls per round (1..1000000)")
	rounds := flag.Int("rounds", 5, "rounds per side (1..100)")
	flag.Parse()
	if *calls < 1 || *calls > 1000000 || *rounds < 1 || *rounds > 100 {
		return fmt.Errorf("-n is 1..1000000 and -rounds 1..100")
	}

	if *socket == "" {
		dir, err := os.MkdirTemp("", "cbd-go-overhead-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		*socket = filepath.Join(dir, "cbd.sock")
		daemon := exec.Command(*cbdPath, "--socket", *socket, "--log-level", "warn")
		daemon.Stderr = os.Stderr
		if err := daemon.Start(); err != nil {
			return err
		}
		defer func() {
			_ = daemon.Process.Signal(os.Interrupt)
			_ = daemon.Wait()
		}()
		if err := waitForSocket(*socket); err != nil {
			return err
		}
	}

	ctx := context.Background()
	client, err := cbd.Dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer client.Close()
	raw, err := newRawLoop(*socket)
	if err != nil {
		return err
	}
	defer raw.conn.Close()

	viaClient := func(n int) (time.Duration, error) {
		start := time.Now()
		for i := 0; i < n; i++ {
			if _, err := client.Failure(ctx, "bench/go-client"); err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}
	viaRaw := func(n int) (time.Duration, error) {
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := raw.failure(); err != nil {
				return 0, err
			}
		}
		return time.Since(start), nil
	}

	// Warm-up: connections open, caches and the scheduler settled.
	for _, run := range []func(int) (time.Duration, error){viaRaw, viaClient} {
		if _, err := run(1000); err != nil {
			return err
		}
	}
	bestRaw, bestClient := time.Duration(1<<62), time.Duration(1<<62)
	for r := 0; r < *rounds; r++ {
		d, err := viaRaw(*calls)
		if err != nil {
			return err
		}
		if d < bestRaw {
			bestRaw = d
		}
		if d, err = viaClient(*calls); err != nil {
			return err
		}
		if d < bestClient {
			bestClient = d
		}
	}
	perCall := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(*calls) }
	fmt.Printf("go: %d sequential failure calls, best of %d rounds\n", *calls, *rounds)
	fmt.Printf("  raw socket loop: %8.1f ms  (%.1f µs/call)\n", float64(bestRaw.Microseconds())/1000, perCall(bestRaw))
	fmt.Printf("  cbd.Client:      %8.1f ms  (%.1f µs/call)\n", float64(bestClient.Microseconds())/1000, perCall(bestClient))
	fmt.Printf("  ratio client/raw: %.2f\n", float64(bestClient)/float64(bestRaw))
	return nil
}

// rawLoop is the floor: one request line out, one reply line in, checked
// only for "ok":true.
type rawLoop struct {
	conn net.Conn
	r    *bufio.Reader
	buf  []byte
	id   int
}

func newRawLoop(socket string) (*rawLoop, error) {
	conn, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	return &rawLoop{conn: conn, r: bufio.NewReaderSize(conn, 64<<10)}, nil
}

var okField = []byte(`"ok":true`)

func (l *rawLoop) failure() error {
	l.id++
	l.buf = append(l.buf[:0], `{"op":"failure","key":"bench/go-raw","id":`...)
	l.buf = strconv.AppendInt(l.buf, int64(l.id), 10)
	l.buf = append(l.buf, "}\n"...)
	if _, err := l.conn.Write(l.buf); err != nil {
		return err
	}
	line, err := l.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.Contains(line, okField) {
		return fmt.Errorf("cbd answered %s", line)
	}
	return nil
}

func waitForSocket(path string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			return conn.Close()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cbd did not listen on %s within 10 s: %w", path, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
