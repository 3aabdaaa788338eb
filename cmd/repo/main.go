// Command repo is a deduplicating backup tool; see the README and docs/.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultMemoryLimit is the Go heap's soft limit unless GOMEMLIMIT is set.
// The pipelines' working set is bounded (packs in flight, chunk buffers,
// encoders: about 100 MiB); without a limit the collector lets the heap
// grow to twice that between collections.
const defaultMemoryLimit = 150 << 20

func main() {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); !ok {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first Ctrl-C the command cancels and releases its
		// lock; a second one kills at once.
		<-ctx.Done()
		stop()
	}()
	stopProfiles := startProfiles()
	code := run(ctx, os.Args[1:], streams{in: os.Stdin, out: os.Stdout, err: os.Stderr})
	stopProfiles()
	stop()
	os.Exit(code)
}
