package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// startProfiles writes a CPU profile to $REPO_CPU_PROFILE and, at stop, a
// heap profile to $REPO_MEM_PROFILE and a blocking profile to
// $REPO_BLOCK_PROFILE: how `make bench` and developers find
// where time and memory go in a real run. Unset variables cost nothing.
func startProfiles() (stop func()) {
	var cpu *os.File
	if p := os.Getenv("REPO_CPU_PROFILE"); p != "" {
		f, err := os.Create(p)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			cpu = f
		} else {
			fmt.Fprintf(os.Stderr, "repo: cannot write cpu profile %s: %v\n", p, err)
		}
	}
	blockProfile := os.Getenv("REPO_BLOCK_PROFILE")
	if blockProfile != "" {
		runtime.SetBlockProfileRate(10000)
	}
	return func() {
		if blockProfile != "" {
			if f, err := os.Create(blockProfile); err == nil {
				pprof.Lookup("block").WriteTo(f, 0)
				f.Close()
			}
		}
		if cpu != nil {
			pprof.StopCPUProfile()
			cpu.Close()
		}
		if p := os.Getenv("REPO_MEM_PROFILE"); p != "" {
			if f, err := os.Create(p); err == nil {
				runtime.GC()
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}
	}
}
