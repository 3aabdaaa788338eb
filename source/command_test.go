package source

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// startCommand starts argv and makes sure it is reaped when the test ends.
func startCommand(t *testing.T, ctx context.Context, argv []string, stderr io.Writer) *Command {
	t.Helper()
	c, err := StartCommand(ctx, argv, stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Kill()
		c.Wait()
	})
	return c
}

func TestCommandStreamsStdout(t *testing.T) {
	const n = 500000 // about 3.3 MiB
	var want bytes.Buffer
	for i := 1; i <= n; i++ {
		want.WriteString(strconv.Itoa(i))
		want.WriteByte('\n')
	}
	c := startCommand(t, t.Context(), []string{"seq", "1", strconv.Itoa(n)}, nil)
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Errorf("read %d bytes, want the %d bytes seq writes", len(got), want.Len())
	}
}

func TestCommandFails(t *testing.T) {
	var stderr bytes.Buffer
	c := startCommand(t, t.Context(), []string{"sh", "-c", "echo out; echo oops >&2; exit 1"}, &stderr)
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "out\n" {
		t.Errorf("stdout = %q, want %q", got, "out\n")
	}
	err = c.Wait()
	want := `command "sh -c 'echo out; echo oops >&2; exit 1'" exited with status 1`
	if err == nil || err.Error() != want {
		t.Fatalf("Wait() = %v, want %q", err, want)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("Wait() = %v: want an *exec.ExitError with code 1", err)
	}
	if stderr.String() != "oops\n" {
		t.Errorf("stderr = %q, want %q", stderr.String(), "oops\n")
	}
	if err2 := c.Wait(); err2 != err {
		t.Errorf("second Wait() = %v, want the first result %v", err2, err)
	}
}

func TestCommandCancelKillsGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// A child in the background that keeps stdout open: only killing the
	// group ends the stream.
	c := startCommand(t, ctx, []string{"sh", "-c", `sleep 30 & echo $! > "$0"; echo ready; wait`, pidFile}, nil)
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("first line = %q, %v", line, err)
	}
	pid, err := readPID(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	readDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		readDone <- err
	}()
	select {
	case err := <-readDone:
		if err != nil {
			t.Errorf("reading after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stdout still open 10s after cancel")
	}
	err = c.Wait()
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "killed by signal terminated") {
		t.Errorf("Wait() = %v, want killed by SIGTERM, context canceled", err)
	}
	waitGone(t, pid)
}

func TestCommandKill(t *testing.T) {
	c := startCommand(t, t.Context(), []string{"sleep", "30"}, nil)
	c.Kill()
	if _, err := io.ReadAll(c); err != nil {
		t.Fatal(err)
	}
	err := c.Wait()
	if err == nil || !strings.Contains(err.Error(), `command "sleep 30" killed by signal killed`) {
		t.Errorf("Wait() after Kill = %v", err)
	}
	c.Kill() // after Wait: nothing to do, no panic
}

// Wait before the output was read to the end must neither hang (the
// command blocked on a full pipe) nor report success.
func TestCommandOutputNotRead(t *testing.T) {
	for _, tc := range []struct {
		name string
		argv []string
		read int
	}{
		{"blocked writer", []string{"seq", "1", "100000000"}, 10},
		{"exited 0", []string{"echo", "hi"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCommand(t, t.Context(), tc.argv, nil)
			if _, err := io.ReadFull(c, make([]byte, tc.read)); err != nil {
				t.Fatal(err)
			}
			if tc.read == 0 {
				// Give echo the time to exit 0, which should not matter.
				time.Sleep(50 * time.Millisecond)
			}
			done := make(chan error, 1)
			go func() { done <- c.Wait() }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrOutputNotRead) {
					t.Errorf("Wait() = %v, want ErrOutputNotRead", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("Wait() with unread output still blocked after 10s")
			}
		})
	}
}

func TestStartCommandErrors(t *testing.T) {
	if _, err := StartCommand(t.Context(), nil, nil); err == nil {
		t.Error("StartCommand(nil argv) succeeded")
	}
	_, err := StartCommand(t.Context(), []string{"/nonexistent/dump-tool", "x"}, nil)
	var ce *CommandError
	if !errors.As(err, &ce) || ce.State != nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("StartCommand(missing) = %v, want a *CommandError wrapping fs.ErrNotExist", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := StartCommand(ctx, []string{"true"}, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("StartCommand(cancelled ctx) = %v, want context.Canceled", err)
	}
}

func TestQuoteArgv(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"pg_dump", "mydb"}, "pg_dump mydb"},
		{[]string{"pg_dump", "-h", "/run/pg", "--file=-", "a@b:5432"}, "pg_dump -h /run/pg --file=- a@b:5432"},
		{[]string{"sh", "-c", "exit 1"}, "sh -c 'exit 1'"},
		{[]string{"x", ""}, "x ''"},
		{[]string{"x", "it's"}, `x 'it'\''s'`},
		{[]string{"x", "$HOME"}, "x '$HOME'"},
	} {
		if got := quoteArgv(tc.argv); got != tc.want {
			t.Errorf("quoteArgv(%q) = %s, want %s", tc.argv, got, tc.want)
		}
	}
}

func readPID(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// waitGone waits up to 10 seconds for pid to be gone or a zombie.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := unix.Kill(pid, 0); errors.Is(err, unix.ESRCH) {
			return
		}
		if stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
			if i := bytes.LastIndexByte(stat, ')'); i >= 0 && bytes.HasPrefix(stat[i:], []byte(") Z")) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still running 10s after its group was killed", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
