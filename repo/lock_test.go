package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"repo/backend"
	"repo/backend/local"
	"repo/backend/mem"
	"repo/chunk"
)

// Lock timings for tests: short enough that the file runs in seconds.
const (
	testSettle = 10 * time.Millisecond
	// testRefresh is for the tests that watch the refresh loop.
	testRefresh = 50 * time.Millisecond
	// waitLong bounds every wait for something that should happen within
	// a few refresh intervals; it is a hang guard, not a threshold.
	waitLong = 5 * time.Second
)

// otherHost is a hostname that is not this machine's.
const otherHost = "other-host.invalid"

// nonExclusiveBackend is a backend without exclusive create: it says so in
// its Properties and, like such a backend, Save replaces an existing object
// (last writer wins). It exercises the gate's check-write-read-back path.
type nonExclusiveBackend struct {
	backend.Backend
	mu sync.Mutex // makes remove+save one replacement
}

func (b *nonExclusiveBackend) Properties() backend.Properties {
	p := b.Backend.Properties()
	p.ExclusiveCreate = false
	return p
}

func (b *nonExclusiveBackend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.Backend.Save(ctx, h, rd)
	if !errors.Is(err, backend.ErrExists) {
		return err
	}
	if err := b.Backend.Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
		return err
	}
	return b.Backend.Save(ctx, h, rd)
}

// hookBackend calls optional hooks before Save and Load; a beforeSave hook
// returning an error fails the Save with it.
type hookBackend struct {
	backend.Backend
	beforeSave  atomic.Pointer[func(backend.Handle) error]
	beforeLoad  atomic.Pointer[func(backend.Handle)]
	afterRemove atomic.Pointer[func(backend.Handle)]
}

func (b *hookBackend) Remove(ctx context.Context, h backend.Handle) error {
	err := b.Backend.Remove(ctx, h)
	if hook := b.afterRemove.Load(); hook != nil {
		(*hook)(h)
	}
	return err
}

func (b *hookBackend) Save(ctx context.Context, h backend.Handle, rd backend.RewindReader) error {
	if fn := b.beforeSave.Load(); fn != nil {
		if err := (*fn)(h); err != nil {
			return err
		}
	}
	return b.Backend.Save(ctx, h, rd)
}

func (b *hookBackend) Load(ctx context.Context, h backend.Handle, length int, offset int64, fn func(io.Reader) error) error {
	if hook := b.beforeLoad.Load(); hook != nil {
		(*hook)(h)
	}
	return b.Backend.Load(ctx, h, length, offset, fn)
}

// lockBackend is one kind of backend the lock tests run on.
type lockBackend struct {
	name      string
	encrypted bool
	make      func(t *testing.T) backend.Backend
}

var lockBackends = []lockBackend{
	{"mem", true, func(*testing.T) backend.Backend { return mem.New() }},
	{"local", false, func(t *testing.T) backend.Backend {
		be, err := local.Create(filepath.Join(t.TempDir(), "repo"))
		if err != nil {
			t.Fatalf("create local backend: %v", err)
		}
		return be
	}},
	{"nonexclusive", true, func(*testing.T) backend.Backend { return &nonExclusiveBackend{Backend: mem.New()} }},
}

// newLockBackend returns a backend of kind lb holding a new repository.
func newLockBackend(t *testing.T, lb lockBackend) backend.Backend {
	t.Helper()
	be := lb.make(t)
	if _, err := Init(t.Context(), be, testInitOptions(lb.encrypted)); err != nil {
		t.Fatalf("init: %v", err)
	}
	return be
}

// forEachLockBackend runs fn as a subtest per backend kind, with a fresh
// repository opened twice (two handles, as two processes would have).
func forEachLockBackend(t *testing.T, fn func(t *testing.T, be backend.Backend, r1, r2 *Repository)) {
	t.Helper()
	for _, lb := range lockBackends {
		t.Run(lb.name, func(t *testing.T) {
			be := newLockBackend(t, lb)
			fn(t, be, openTestRepo(t, be), openTestRepo(t, be))
		})
	}
}

// reports collects the lines a Lock reports.
type reports struct {
	mu   sync.Mutex
	msgs []string
}

func (r *reports) add(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, msg)
}

func (r *reports) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// testLockOpts are quick lock options: a short settle, default refresh and
// stale times (so nothing refreshes or goes stale during a test), and no
// retry.
func testLockOpts(exclusive bool, command string) LockOptions {
	return LockOptions{Exclusive: exclusive, Command: command, Settle: testSettle}
}

// mustLock locks r and unlocks it at the end of the test.
func mustLock(t *testing.T, r *Repository, opts LockOptions) (*Lock, context.Context) {
	t.Helper()
	l, ctx, err := r.Lock(t.Context(), opts)
	if err != nil {
		t.Fatalf("lock (exclusive=%v): %v", opts.Exclusive, err)
	}
	t.Cleanup(func() {
		if err := l.Unlock(); err != nil {
			t.Errorf("unlock: %v", err)
		}
	})
	return l, ctx
}

// lockNames lists locks/ of be, sorted, the gate included.
func lockNames(t *testing.T, be backend.Backend) []string {
	t.Helper()
	return names(t, be, backend.LockFile)
}

// wantLockNames fails the test unless locks/ of be holds exactly want.
func wantLockNames(t *testing.T, be backend.Backend, want ...string) {
	t.Helper()
	got := lockNames(t, be)
	w := append([]string(nil), want...)
	if len(w) == 0 {
		w = nil
	}
	slices.Sort(w)
	if strings.Join(got, ",") != strings.Join(w, ",") {
		t.Errorf("locks/ holds %v, want %v", got, w)
	}
}

// hostname is this machine's name as lock records have it.
func hostname(t *testing.T) string {
	t.Helper()
	h, err := os.Hostname()
	if err != nil {
		t.Skipf("no hostname: %v", err)
	}
	return h
}

// deadPID returns the PID of a process that ran and was reaped.
func deadPID(t *testing.T) int {
	t.Helper()
	for range 5 {
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Skipf("cannot run true: %v", err)
		}
		pid := cmd.Process.Pid
		if alive, _ := processStart(pid); !alive {
			return pid
		}
	}
	t.Skip("PIDs of exited processes keep being reused")
	return 0
}

// selfRec is this process's lock record, refreshed now.
func selfRec(t *testing.T, exclusive bool, command string) LockRecord {
	t.Helper()
	rec, err := selfRecord(LockOptions{Exclusive: exclusive, Command: command})
	if err != nil {
		t.Fatalf("self record: %v", err)
	}
	rec.Created = nowWall()
	rec.Refreshed = rec.Created
	return rec
}

// plantLock stores rec in locks/ as another process would and returns its
// name.
func plantLock(t *testing.T, r *Repository, rec LockRecord) string {
	t.Helper()
	name, err := r.saveLock(context.Background(), &rec)
	if err != nil {
		t.Fatalf("plant lock: %v", err)
	}
	return name
}

// plantGate stores rec as the exclusive gate, sealed the way takeGate does.
func plantGate(t *testing.T, r *Repository, rec LockRecord) {
	t.Helper()
	plain, err := json.Marshal(&rec)
	if err != nil {
		t.Fatal(err)
	}
	h := backend.Handle{Type: backend.LockFile, Name: gateName}
	if err := r.be.Save(context.Background(), h, backend.NewByteReader(r.sealer.Seal(nil, plain))); err != nil {
		t.Fatalf("plant gate: %v", err)
	}
}

// fakeClock replaces now by the real clock plus an offset the test can
// move, until the end of the test. Call it before any Lock of the test, so
// that no refresh loop reads now while it is replaced.
func fakeClock(t *testing.T) *atomic.Int64 {
	t.Helper()
	var off atomic.Int64
	old := now
	now = func() time.Time { return time.Now().Add(time.Duration(off.Load())) }
	t.Cleanup(func() { now = old })
	return &off
}

// waitDone waits for ctx to be cancelled and returns its cause.
func waitDone(t *testing.T, ctx context.Context, what string) error {
	t.Helper()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(waitLong):
		t.Fatalf("%s: context not cancelled within %v", what, waitLong)
		return nil
	}
}

// checkLockedError checks that err is a *LockedError naming holder.
func checkLockedError(t *testing.T, err error, holder LockRecord, name string) *LockedError {
	t.Helper()
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("error %v (%T), want *LockedError", err, err)
	}
	h := le.Holder
	if h.Hostname != holder.Hostname || h.PID != holder.PID || h.Command != holder.Command || h.Exclusive != holder.Exclusive {
		t.Errorf("LockedError holder %+v, want host %s PID %d command %q exclusive %v", h, holder.Hostname, holder.PID, holder.Command, holder.Exclusive)
	}
	if name != "" && le.Name != name {
		t.Errorf("LockedError names lock %s, want %s", le.Name, name)
	}
	msg := err.Error()
	for _, want := range []string{holder.Hostname, fmt.Sprintf("PID %d", holder.PID), holder.Command} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	kind := "a shared lock"
	if holder.Exclusive || le.Gate {
		kind = "an exclusive lock"
	}
	if !strings.Contains(msg, kind) {
		t.Errorf("error %q does not say %q", msg, kind)
	}
	return le
}

func TestLockConflicts(t *testing.T) {
	tests := []struct {
		name            string
		first, second   bool // exclusive?
		wantConflicting bool
	}{
		{"shared+shared", false, false, false},
		{"shared+exclusive", false, true, true},
		{"exclusive+shared", true, false, true},
		{"exclusive+exclusive", true, true, true},
	}
	forEachLockBackend(t, func(t *testing.T, be backend.Backend, r1, r2 *Repository) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				holder, hctx := mustLock(t, r1, testLockOpts(tt.first, "repo holder"))
				if rec := holder.Record(); rec.Hostname != hostname(t) || rec.PID != os.Getpid() || rec.Exclusive != tt.first || rec.Command != "repo holder" {
					t.Errorf("holder record %+v", rec)
				}
				wantLockNames(t, be, holder.Name())

				l, ctx, err := r2.Lock(t.Context(), testLockOpts(tt.second, "repo second"))
				if !tt.wantConflicting {
					if err != nil {
						t.Fatalf("second lock: %v", err)
					}
					defer l.Unlock()
					wantLockNames(t, be, holder.Name(), l.Name())
					infos, err := r1.Locks(t.Context(), LockOptions{})
					if err != nil {
						t.Fatal(err)
					}
					if len(infos) != 2 {
						t.Fatalf("Locks: %d, want 2", len(infos))
					}
					for i, li := range infos {
						if li.Record == nil || li.Err != nil || li.Stale || li.Gate {
							t.Errorf("Locks[%d] = %+v, want a live readable lock", i, li)
						}
					}
					if infos[0].Name != holder.Name() {
						t.Errorf("Locks not sorted by creation: first %s, want the holder %s", infos[0].Name, holder.Name())
					}
					if ctx.Err() != nil || hctx.Err() != nil {
						t.Errorf("lock contexts cancelled: %v, %v", ctx.Err(), hctx.Err())
					}
					return
				}
				if err == nil {
					l.Unlock()
					t.Fatalf("second lock succeeded beside the %v holder", tt.first)
				}
				if l != nil || ctx != nil {
					t.Errorf("failed Lock returned a lock or context")
				}
				le := checkLockedError(t, err, holder.Record(), holder.Name())
				if le.Gate || le.Unreadable {
					t.Errorf("LockedError Gate=%v Unreadable=%v, want neither", le.Gate, le.Unreadable)
				}
				if !strings.Contains(err.Error(), "locked by") {
					t.Errorf("error %q does not say 'locked by'", err)
				}
				// The loser withdrew its object and left no gate.
				wantLockNames(t, be, holder.Name())
				if hctx.Err() != nil {
					t.Errorf("holder's context cancelled: %v", context.Cause(hctx))
				}
			})
		}
	})
}

func TestLockRetryFor(t *testing.T) {
	tests := []struct {
		name          string
		first, second bool
		backends      string // where the case runs: each case takes ~0.5 s
	}{
		{"exclusive-then-shared", true, false, "mem"},
		{"shared-then-exclusive", false, true, "mem nonexclusive"},
		{"exclusive-then-exclusive", true, true, "mem local"},
	}
	// The cases mostly wait, so they run in parallel, each on its own
	// repository.
	for _, lb := range lockBackends {
		for _, tt := range tests {
			if !slices.Contains(strings.Fields(tt.backends), lb.name) {
				continue
			}
			t.Run(lb.name+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				be := newLockBackend(t, lb)
				r1, r2 := openTestRepo(t, be), openTestRepo(t, be)
				holder, _, err := r1.Lock(t.Context(), testLockOpts(tt.first, "holder"))
				if err != nil {
					t.Fatal(err)
				}
				var unlocking atomic.Bool
				unlocked := make(chan error, 1)
				go func() {
					time.Sleep(300 * time.Millisecond)
					unlocking.Store(true)
					unlocked <- holder.Unlock()
				}()
				opts := testLockOpts(tt.second, "waiter")
				opts.RetryFor = waitLong
				l, ctx, err := r2.Lock(t.Context(), opts)
				if err != nil {
					<-unlocked
					t.Fatalf("lock with RetryFor: %v", err)
				}
				if !unlocking.Load() {
					t.Errorf("waiter got the lock before the holder unlocked")
				}
				if err := <-unlocked; err != nil {
					t.Errorf("holder unlock: %v", err)
				}
				if ctx.Err() != nil {
					t.Errorf("waiter's context cancelled")
				}
				wantLockNames(t, be, l.Name())
				if err := l.Unlock(); err != nil {
					t.Fatal(err)
				}
				wantLockNames(t, be)
			})
		}

		t.Run(lb.name+"/gives-up", func(t *testing.T) {
			t.Parallel()
			be := newLockBackend(t, lb)
			r1, r2 := openTestRepo(t, be), openTestRepo(t, be)
			holder, _ := mustLock(t, r1, testLockOpts(true, "holder"))
			opts := testLockOpts(false, "waiter")
			opts.RetryFor = 150 * time.Millisecond
			_, _, err := r2.Lock(t.Context(), opts)
			checkLockedError(t, err, holder.Record(), holder.Name())
			wantLockNames(t, be, holder.Name())
		})

		t.Run(lb.name+"/cancelled", func(t *testing.T) {
			t.Parallel()
			be := newLockBackend(t, lb)
			r1, r2 := openTestRepo(t, be), openTestRepo(t, be)
			holder, _ := mustLock(t, r1, testLockOpts(true, "holder"))
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(100*time.Millisecond, cancel)
			opts := testLockOpts(true, "waiter")
			opts.RetryFor = time.Minute
			_, _, err := r2.Lock(ctx, opts)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("lock cancelled while retrying: %v, want context.Canceled", err)
			}
			wantLockNames(t, be, holder.Name())
		})
	}
}

func TestLockExclusiveRace(t *testing.T) {
	const goroutines, rounds = 20, 30
	for _, lb := range lockBackends {
		t.Run(lb.name, func(t *testing.T) {
			be := newLockBackend(t, lb)
			repos := make([]*Repository, 4)
			for i := range repos {
				repos[i] = openTestRepo(t, be)
			}
			opts := LockOptions{Exclusive: true, Command: "race", Settle: 5 * time.Millisecond}
			var holders, overlaps atomic.Int32
			winners := make([]int, rounds)
			unexpected := 0
			for round := range rounds {
				var won atomic.Int32
				var attempted, finished sync.WaitGroup
				attempted.Add(goroutines)
				finished.Add(goroutines)
				start := make(chan struct{})
				errs := make(chan error, 2*goroutines)
				for g := range goroutines {
					go func() {
						defer finished.Done()
						<-start
						l, _, err := repos[g%len(repos)].Lock(t.Context(), opts)
						if err != nil {
							var le *LockedError
							if !errors.As(err, &le) {
								errs <- fmt.Errorf("goroutine %d: %w", g, err)
							}
							attempted.Done()
							return
						}
						won.Add(1)
						if holders.Add(1) > 1 {
							overlaps.Add(1)
						}
						// Hold until every racer of the round has given up
						// or won, so that two winners would overlap.
						attempted.Done()
						attempted.Wait()
						holders.Add(-1)
						if err := l.Unlock(); err != nil {
							errs <- fmt.Errorf("goroutine %d: unlock: %w", g, err)
						}
					}()
				}
				close(start)
				finished.Wait()
				close(errs)
				for err := range errs {
					if unexpected++; unexpected <= 3 {
						t.Errorf("round %d: unexpected error: %v", round, err)
					}
				}
				winners[round] = int(won.Load())
				if left := lockNames(t, be); len(left) > 0 {
					t.Fatalf("round %d left %v in locks/", round, left)
				}
			}
			if unexpected > 3 {
				t.Errorf("%d unexpected errors in all (first 3 shown)", unexpected)
			}
			if n := overlaps.Load(); n > 0 {
				t.Errorf("%d times two goroutines held the exclusive lock at once", n)
			}
			hist := map[int]int{}
			for _, w := range winners {
				hist[w]++
			}
			t.Logf("%s: winners per round → rounds: %v (zero-winner rounds: %d of %d)", lb.name, hist, hist[0], rounds)
			for w := range hist {
				if w > 1 {
					t.Errorf("a round had %d winners", w)
				}
			}
			if be.Properties().ExclusiveCreate {
				// With an exclusive-create gate exactly one racer writes
				// its lock at a time, so every round has exactly one
				// winner.
				if hist[1] != rounds {
					t.Errorf("winners per round %v, want exactly one winner in every round", winners)
				}
			} else if hist[1] == 0 {
				t.Errorf("no round had a winner: %v", winners)
			}
		})
	}
}

func TestLockStale(t *testing.T) {
	const staleAge = 30 * time.Minute
	dead := deadPID(t)
	self := selfRec(t, false, "self")
	if self.ProcessStart == 0 {
		t.Log("no process start time for this process: the reused-PID case is skipped")
	}
	tests := []struct {
		name       string
		skip       string
		rec        func(r *LockRecord)
		clock      time.Duration // how far now moves ahead before judging
		wantStale  bool
		wantReason string
	}{
		{name: "own record", rec: func(*LockRecord) {}},
		{name: "dead PID", rec: func(r *LockRecord) { r.PID, r.ProcessStart = dead, 12345 }, wantStale: true, wantReason: fmt.Sprintf("process %d is dead", dead)},
		{name: "dead PID without start time", rec: func(r *LockRecord) { r.PID, r.ProcessStart = dead, 0 }, wantStale: true, wantReason: "is dead"},
		{name: "reused PID", skip: skipIf(self.ProcessStart == 0, "no process start"),
			rec: func(r *LockRecord) { r.ProcessStart++ }, wantStale: true, wantReason: fmt.Sprintf("PID %d now belongs to another process", self.PID)},
		{name: "unknown start time", rec: func(r *LockRecord) { r.ProcessStart = 0 }},
		{name: "rebooted", skip: skipIf(bootID() == "", "no boot id"),
			rec: func(r *LockRecord) { r.BootID = "00000000-0000-0000-0000-000000000000" }, wantStale: true, wantReason: "rebooted"},
		{name: "unknown boot id", rec: func(r *LockRecord) { r.BootID = "" }},
		{name: "other host, recent", rec: func(r *LockRecord) { r.Hostname, r.PID, r.BootID = otherHost, dead, "x" }},
		{name: "other host, refreshed long ago", rec: func(r *LockRecord) {
			r.Hostname = otherHost
			r.Refreshed = r.Refreshed.Add(-2 * staleAge)
		}, wantStale: true, wantReason: "not refreshed for"},
		{name: "other host, clock moved on", rec: func(r *LockRecord) { r.Hostname = otherHost },
			clock: staleAge + time.Minute, wantStale: true, wantReason: "not refreshed for 31m"},
		{name: "other host, just under the stale age", rec: func(r *LockRecord) { r.Hostname = otherHost },
			clock: staleAge - time.Minute},
		{name: "own record, not refreshed", rec: func(r *LockRecord) { r.Refreshed = r.Refreshed.Add(-2 * staleAge) },
			wantStale: true, wantReason: "not refreshed for"},
		{name: "refreshed in the future", rec: func(r *LockRecord) { r.Hostname = otherHost; r.Refreshed = r.Refreshed.Add(time.Hour) }},
	}
	clock := fakeClock(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skip != "" {
				t.Skip(tt.skip)
			}
			rec := self
			rec.Refreshed = nowWall()
			tt.rec(&rec)
			clock.Store(int64(tt.clock))
			defer clock.Store(0)
			stale, reason := lockStale(&rec, staleAge)
			if stale != tt.wantStale || !strings.Contains(reason, tt.wantReason) {
				t.Errorf("lockStale = %v, %q; want %v, %q", stale, reason, tt.wantStale, tt.wantReason)
			}
			if !stale && reason != "" {
				t.Errorf("live lock with reason %q", reason)
			}
		})
	}
}

func skipIf(cond bool, why string) string {
	if cond {
		return why
	}
	return ""
}

func TestLockRemovesStaleConflicts(t *testing.T) {
	dead := deadPID(t)
	tests := []struct {
		name          string
		skip          string
		planted       func(r *LockRecord)
		stale         bool // the planted lock is stale (removed if it conflicts)
		plantedExcl   bool
		lockerExcl    bool
		wantLocked    bool
		wantRemoved   bool
		wantReportHas string
	}{
		{name: "dead exclusive, shared locker", planted: func(r *LockRecord) { r.PID = dead },
			plantedExcl: true, wantRemoved: true, wantReportHas: fmt.Sprintf("process %d is dead", dead)},
		{name: "dead shared, exclusive locker", planted: func(r *LockRecord) { r.PID = dead },
			lockerExcl: true, wantRemoved: true, wantReportHas: "is dead"},
		{name: "dead exclusive, exclusive locker", planted: func(r *LockRecord) { r.PID = dead },
			plantedExcl: true, lockerExcl: true, wantRemoved: true, wantReportHas: "is dead"},
		{name: "reused PID, exclusive locker", planted: func(r *LockRecord) { r.ProcessStart++ },
			lockerExcl: true, wantRemoved: true, wantReportHas: "another process"},
		{name: "rebooted, exclusive locker", skip: skipIf(bootID() == "", "no boot id"),
			planted:    func(r *LockRecord) { r.BootID = "00000000-0000-0000-0000-000000000000" },
			lockerExcl: true, wantRemoved: true, wantReportHas: "rebooted"},
		{name: "foreign not refreshed, shared locker", planted: func(r *LockRecord) {
			r.Hostname = otherHost
			r.Refreshed = r.Refreshed.Add(-time.Hour)
			r.Created = r.Refreshed
		}, plantedExcl: true, wantRemoved: true, wantReportHas: "not refreshed for"},
		// Not conflicting: a shared locker leaves a stale shared lock alone.
		{name: "dead shared, shared locker", planted: func(r *LockRecord) { r.PID = dead }, stale: true},
		// Live conflicting locks are never removed.
		{name: "live foreign exclusive, shared locker", planted: func(r *LockRecord) { r.Hostname = otherHost },
			plantedExcl: true, wantLocked: true},
		{name: "live foreign shared, exclusive locker", planted: func(r *LockRecord) { r.Hostname, r.PID = otherHost, dead },
			lockerExcl: true, wantLocked: true},
		{name: "live own-process exclusive, exclusive locker", planted: func(*LockRecord) {},
			plantedExcl: true, lockerExcl: true, wantLocked: true},
	}
	forEachLockBackend(t, func(t *testing.T, be backend.Backend, r1, _ *Repository) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				if tt.skip != "" {
					t.Skip(tt.skip)
				}
				rec := selfRec(t, tt.plantedExcl, "planted")
				tt.planted(&rec)
				name := plantLock(t, r1, rec)
				defer r1.RemoveLocks(context.Background(), name)

				infos, err := r1.Locks(t.Context(), LockOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if len(infos) != 1 || infos[0].Name != name || infos[0].Record == nil {
					t.Fatalf("Locks = %+v, want the planted lock", infos)
				}
				if infos[0].Stale != (tt.wantRemoved || tt.stale) {
					t.Errorf("Locks: Stale=%v (%q)", infos[0].Stale, infos[0].StaleReason)
				}

				var rep reports
				opts := testLockOpts(tt.lockerExcl, "locker")
				opts.Report = rep.add
				l, _, err := r1.Lock(t.Context(), opts)
				if tt.wantLocked {
					if err == nil {
						l.Unlock()
						t.Fatalf("lock succeeded beside a live conflicting lock")
					}
					checkLockedError(t, err, rec, name)
					wantLockNames(t, be, name)
				} else {
					if err != nil {
						t.Fatalf("lock: %v", err)
					}
					if tt.wantRemoved {
						wantLockNames(t, be, l.Name())
					} else {
						wantLockNames(t, be, l.Name(), name)
					}
					if err := l.Unlock(); err != nil {
						t.Fatal(err)
					}
				}
				msgs := rep.all()
				if tt.wantReportHas == "" {
					if len(msgs) > 0 {
						t.Errorf("reported %q, want nothing", msgs)
					}
					return
				}
				if len(msgs) != 1 || !strings.HasPrefix(msgs[0], "removed stale ") ||
					!strings.Contains(msgs[0], tt.wantReportHas) || !strings.Contains(msgs[0], "planted") ||
					!strings.Contains(msgs[0], rec.Hostname) {
					t.Errorf("reported %q, want one 'removed stale' line about the planted lock (%q)", msgs, tt.wantReportHas)
				}
			})
		}
	})
}

func TestLockRefresh(t *testing.T) {
	forEachLockBackend(t, func(t *testing.T, be backend.Backend, r1, _ *Repository) {
		opts := testLockOpts(true, "refresher")
		opts.Refresh = testRefresh
		l, ctx, err := r1.Lock(t.Context(), opts)
		if err != nil {
			t.Fatal(err)
		}
		first := l.Record()
		seen := map[string]bool{l.Name(): true}
		deadline := time.Now().Add(waitLong)
		for len(seen) < 4 && time.Now().Before(deadline) {
			// An object is written before the previous one is removed, so
			// a listing shows one or, during a refresh, two.
			if n := lockNames(t, be); len(n) < 1 || len(n) > 2 {
				t.Errorf("locks/ holds %v during refreshes", n)
			}
			seen[l.Name()] = true
			time.Sleep(5 * time.Millisecond)
		}
		if len(seen) < 4 {
			t.Fatalf("lock name changed %d times within %v, want at least 3", len(seen)-1, waitLong)
		}
		rec := l.Record()
		if !rec.Refreshed.After(first.Refreshed) || !rec.Created.Equal(first.Created) {
			t.Errorf("after refreshes: created %v→%v, refreshed %v→%v", first.Created, rec.Created, first.Refreshed, rec.Refreshed)
		}
		// Between two refreshes locks/ holds exactly the current object.
		ok := false
		for range 20 {
			name := l.Name()
			got := lockNames(t, be)
			if len(got) == 1 && got[0] == name && l.Name() == name {
				ok = true
				break
			}
			time.Sleep(7 * time.Millisecond)
		}
		if !ok {
			t.Errorf("locks/ never held exactly the current lock object")
		}
		// The stored record is the current one.
		infos, err := r1.Locks(t.Context(), LockOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(infos) == 0 || infos[0].Record == nil || infos[0].Record.Command != "refresher" || infos[0].Stale {
			t.Errorf("Locks = %+v", infos)
		}
		if ctx.Err() != nil || l.Valid() != nil {
			t.Fatalf("lock lost while refreshing: %v / %v", context.Cause(ctx), l.Valid())
		}

		if err := l.Unlock(); err != nil {
			t.Fatalf("unlock: %v", err)
		}
		wantLockNames(t, be)
		if ctx.Err() == nil {
			t.Errorf("context not cancelled by Unlock")
		} else if cause := context.Cause(ctx); errors.Is(cause, ErrLockLost) {
			t.Errorf("Unlock cancelled with %v", cause)
		}
		if err := l.Unlock(); err != nil {
			t.Errorf("second unlock: %v", err)
		}
		if r1.lock.Load() != nil {
			t.Errorf("repository still records the lock after Unlock")
		}
		if err := r1.checkLock(t.Context()); err != nil {
			t.Errorf("checkLock after Unlock: %v", err)
		}
	})
}

// TestLockRefreshStaleMargin holds a lock for several refresh intervals with
// stale ages close to the refresh interval: any accepted combination must
// refresh before the holder's own abort rule (Valid) gives up on it.
func TestLockRefreshStaleMargin(t *testing.T) {
	// Four times testRefresh: the margins scale with the intervals, and a
	// refresh (a save and a remove) must fit in the smallest of them even
	// when CI runs many tests at once (at testRefresh, a CI run saw "not
	// refreshed for 84ms" against the 75 ms limit of "stale 2x refresh").
	const refresh = 4 * testRefresh
	tests := []struct {
		name           string
		refresh, stale time.Duration
	}{
		{"stale default", refresh, 0},
		{"stale 4x refresh", refresh, 4 * refresh},
		{"stale 3x refresh", refresh, 3 * refresh},
		{"stale 2x refresh", refresh, 2 * refresh},
		{"stale 1.2x refresh", refresh, 6 * refresh / 5},
		// The refresh interval comes down to stale/6 = refresh; a
		// stale age of refresh/2 would leave a margin of a few
		// milliseconds, which a loaded machine's scheduler can miss.
		{"stale below refresh (defaulted)", 12 * refresh, 6 * refresh},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := openTestRepo(t, newLockBackend(t, lockBackends[0]))
			opts := testLockOpts(false, "margin")
			opts.Refresh, opts.Stale = tt.refresh, tt.stale
			l, ctx := mustLock(t, r, opts)
			first := l.Name()
			select {
			case <-ctx.Done():
				t.Fatalf("lock lost after %s: %v", time.Since(l.Record().Created).Round(time.Millisecond), context.Cause(ctx))
			case <-time.After(6 * refresh):
			}
			if err := l.Valid(); err != nil {
				t.Errorf("Valid: %v", err)
			}
			if l.Name() == first {
				t.Errorf("not refreshed in %v", 6*refresh)
			}
		})
	}
}

func TestLockLost(t *testing.T) {
	forEachLockBackend(t, func(t *testing.T, be backend.Backend, r1, r2 *Repository) {
		for _, exclusive := range []bool{false, true} {
			t.Run(fmt.Sprintf("exclusive=%v", exclusive), func(t *testing.T) {
				opts := testLockOpts(exclusive, "victim")
				opts.Refresh = testRefresh
				l, ctx, err := r1.Lock(t.Context(), opts)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Unlock()
				// Someone removes the lock behind the holder's back.
				if err := r2.RemoveLocks(t.Context(), l.Name()); err != nil {
					t.Fatal(err)
				}
				cause := waitDone(t, ctx, "lock removed")
				if !errors.Is(cause, ErrLockLost) {
					t.Errorf("context cause %v, want ErrLockLost", cause)
				}
				checkLost(t, r1, l)
				wantLockNames(t, be)
				if err := l.Unlock(); err != nil {
					t.Errorf("unlock of a lost lock: %v", err)
				}
				wantLockNames(t, be)
				if err := l.Unlock(); err != nil {
					t.Errorf("second unlock: %v", err)
				}
			})
		}

		// A commit looks at the backend: a removed lock is noticed before
		// the next refresh.
		t.Run("commit notices removal", func(t *testing.T) {
			l, ctx := mustLock(t, r1, testLockOpts(false, "victim")) // refresh: 5 minutes
			if err := l.Check(t.Context()); err != nil {
				t.Fatalf("Check: %v", err)
			}
			if err := r2.RemoveLocks(t.Context(), l.Name()); err != nil {
				t.Fatal(err)
			}
			checkLost(t, r1, l)
			if cause := waitDone(t, ctx, "commit noticed removal"); !errors.Is(cause, ErrLockLost) {
				t.Errorf("context cause %v, want ErrLockLost", cause)
			}
			wantLockNames(t, be)
		})

		// The lock vanishes between the refresh's check of the old object
		// and its removal: the new object must be withdrawn too.
		t.Run("removed during refresh", func(t *testing.T) {
			hb := &hookBackend{Backend: be}
			r := openTestRepo(t, hb)
			opts := testLockOpts(true, "victim")
			opts.Refresh = testRefresh
			l, ctx, err := r.Lock(t.Context(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Unlock()
			var once sync.Once
			hook := func(h backend.Handle) error {
				if h.Type == backend.LockFile {
					once.Do(func() { _ = r2.RemoveLocks(context.Background(), l.Name()) })
				}
				return nil
			}
			hb.beforeSave.Store(&hook)
			cause := waitDone(t, ctx, "lock removed during refresh")
			if !errors.Is(cause, ErrLockLost) {
				t.Errorf("context cause %v, want ErrLockLost", cause)
			}
			checkLost(t, r, l)
			wantLockNames(t, be)
		})
	})
}

// TestLockCheckDuringRefresh: a commit checks the lock (SaveSnapshot →
// Lock.Check) while a refresh has removed the previous object but not yet
// recorded the new name. The lock is fine and must not be declared lost.
func TestLockCheckDuringRefresh(t *testing.T) {
	hb := &hookBackend{Backend: newLockBackend(t, lockBackends[0])}
	r := openTestRepo(t, hb)
	opts := testLockOpts(false, "committer")
	opts.Refresh = testRefresh
	l, ctx := mustLock(t, r, opts)
	first := l.Name()
	checked := make(chan error, 1)
	var once sync.Once
	hook := func(h backend.Handle) {
		if h.Type == backend.LockFile && h.Name == first {
			// The refresh just removed its previous object: a commit
			// arrives now. The refresh goes on once the commit's check
			// is done, or after a while if the check waits for it.
			once.Do(func() {
				done := make(chan struct{})
				go func() {
					defer close(done)
					checked <- r.checkLock(context.Background())
				}()
				select {
				case <-done:
				case <-time.After(200 * time.Millisecond):
				}
			})
		}
	}
	hb.afterRemove.Store(&hook)
	var err error
	select {
	case err = <-checked:
	case <-time.After(waitLong):
		t.Fatal("no refresh")
	}
	hb.afterRemove.Store(nil)
	if err != nil {
		t.Errorf("commit during a refresh: %v", err)
	}
	time.Sleep(2 * testRefresh)
	if ctx.Err() != nil {
		t.Errorf("lock lost: %v", context.Cause(ctx))
	}
}

// checkLost checks that l is lost and r refuses to commit work under it.
func checkLost(t *testing.T, r *Repository, l *Lock) {
	t.Helper()
	sn := &Snapshot{Time: time.Now(), Paths: []string{"/x"}, Hostname: "h"}
	if err := r.SaveSnapshot(context.Background(), sn); !errors.Is(err, ErrLockLost) {
		t.Errorf("SaveSnapshot under a lost lock: %v, want ErrLockLost", err)
	}
	if err := r.RemoveSnapshot(context.Background(), chunk.Hash([]byte("x"))); !errors.Is(err, ErrLockLost) {
		t.Errorf("RemoveSnapshot under a lost lock: %v, want ErrLockLost", err)
	}
	if err := l.Valid(); !errors.Is(err, ErrLockLost) {
		t.Errorf("Valid = %v, want ErrLockLost", err)
	}
	if got := names(t, r.be, backend.SnapshotFile); len(got) > 0 {
		t.Errorf("snapshots written under a lost lock: %v", got)
	}
}

func TestLockNotRefreshed(t *testing.T) {
	t.Run("clock jumps", func(t *testing.T) {
		clock := fakeClock(t) // before any Lock: see fakeClock
		be := newLockBackend(t, lockBackends[0])
		r := openTestRepo(t, be)
		opts := testLockOpts(false, "sleeper")
		opts.Refresh = testRefresh // Stale stays 30 minutes
		l, ctx := mustLock(t, r, opts)
		if err := l.Valid(); err != nil {
			t.Fatalf("Valid: %v", err)
		}
		// The machine was suspended for an hour: the monotonic timers did
		// not run, the wall clock did.
		clock.Store(int64(time.Hour))
		if err := l.Valid(); !errors.Is(err, ErrLockLost) || !strings.Contains(err.Error(), "not refreshed for") {
			t.Errorf("Valid after the jump: %v, want ErrLockLost (not refreshed)", err)
		}
		if err := r.SaveSnapshot(context.Background(), &Snapshot{}); !errors.Is(err, ErrLockLost) {
			t.Errorf("SaveSnapshot after the jump: %v, want ErrLockLost", err)
		}
		cause := waitDone(t, ctx, "clock jumped")
		if !errors.Is(cause, ErrLockLost) {
			t.Errorf("context cause %v, want ErrLockLost", cause)
		}
		if err := l.Unlock(); err != nil {
			t.Errorf("unlock: %v", err)
		}
		wantLockNames(t, be)
	})

	t.Run("refresh keeps failing", func(t *testing.T) {
		hb := &hookBackend{Backend: newLockBackend(t, lockBackends[0])}
		r := openTestRepo(t, hb)
		opts := testLockOpts(true, "unlucky")
		opts.Refresh, opts.Stale = testRefresh, 4*testRefresh
		l, ctx := mustLock(t, r, opts)
		var fails atomic.Int32
		hook := func(h backend.Handle) error {
			if h.Type == backend.LockFile {
				fails.Add(1)
				return errInjected
			}
			return nil
		}
		hb.beforeSave.Store(&hook)
		cause := waitDone(t, ctx, "refresh failing")
		if !errors.Is(cause, ErrLockLost) || !strings.Contains(cause.Error(), "not refreshed for") {
			t.Errorf("context cause %v, want ErrLockLost (not refreshed)", cause)
		}
		if fails.Load() == 0 {
			t.Errorf("no refresh was attempted")
		}
		if err := l.Valid(); !errors.Is(err, ErrLockLost) {
			t.Errorf("Valid = %v, want ErrLockLost", err)
		}
		hb.beforeSave.Store(nil)
		// The last object written stays until Unlock removes it.
		wantLockNames(t, hb, l.Name())
		if err := l.Unlock(); err != nil {
			t.Errorf("unlock: %v", err)
		}
		wantLockNames(t, hb)
	})
}

func TestLockGate(t *testing.T) {
	dead := deadPID(t)
	tests := []struct {
		name      string
		rec       func(r *LockRecord)
		wantStale bool
	}{
		{"dead process", func(r *LockRecord) { r.PID = dead }, true},
		{"foreign, old", func(r *LockRecord) {
			r.Hostname = otherHost
			r.Refreshed = r.Refreshed.Add(-2 * time.Minute) // gates go stale after a minute
		}, true},
		{"foreign, recent", func(r *LockRecord) { r.Hostname = otherHost }, false},
		{"this process", func(*LockRecord) {}, false},
	}
	forEachLockBackend(t, func(t *testing.T, be backend.Backend, r1, _ *Repository) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				rec := selfRec(t, true, "gatekeeper")
				tt.rec(&rec)
				plantGate(t, r1, rec)
				defer r1.RemoveLocks(context.Background(), gateName)

				infos, err := r1.Locks(t.Context(), LockOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if len(infos) != 1 || !infos[0].Gate || infos[0].Name != gateName || infos[0].Record == nil || infos[0].Stale != tt.wantStale {
					t.Fatalf("Locks = %+v, want the gate with Stale=%v", infos, tt.wantStale)
				}

				// A shared locker does not take the gate.
				sl, _ := mustLock(t, r1, testLockOpts(false, "shared"))
				wantLockNames(t, be, sl.Name(), gateName)
				if err := sl.Unlock(); err != nil {
					t.Fatal(err)
				}

				var rep reports
				opts := testLockOpts(true, "exclusive")
				opts.Report = rep.add
				l, _, err := r1.Lock(t.Context(), opts)
				if tt.wantStale {
					if err != nil {
						t.Fatalf("exclusive lock with a stale gate: %v", err)
					}
					// The stale gate was cleared, and ours released.
					wantLockNames(t, be, l.Name())
					if err := l.Unlock(); err != nil {
						t.Fatal(err)
					}
					wantLockNames(t, be)
					return
				}
				if err == nil {
					l.Unlock()
					t.Fatalf("exclusive lock succeeded beside a live gate")
				}
				le := checkLockedError(t, err, rec, gateName)
				if !le.Gate {
					t.Errorf("LockedError.Gate = false for the gate")
				}
				if !strings.Contains(err.Error(), "being locked by") {
					t.Errorf("error %q does not say 'being locked by'", err)
				}
				wantLockNames(t, be, gateName)
			})
		}
	})
}

func TestLockUnreadable(t *testing.T) {
	garbage := []byte("this is not a sealed lock record")
	tests := []struct {
		name  string
		plant func(t *testing.T, r *Repository) string
	}{
		{"wrong hash", func(t *testing.T, r *Repository) string {
			name := chunk.Hash([]byte("some other content")).String()
			saveRaw(t, r.be, name, garbage)
			return name
		}},
		{"garbage under its hash", func(t *testing.T, r *Repository) string {
			name := chunk.Hash(garbage).String()
			saveRaw(t, r.be, name, garbage)
			return name
		}},
		{"sealed, not JSON", func(t *testing.T, r *Repository) string {
			id, err := r.SaveUnpacked(context.Background(), backend.LockFile, []byte("{not json"))
			if err != nil {
				t.Fatal(err)
			}
			return id.String()
		}},
		{"not a hex name", func(t *testing.T, r *Repository) string {
			saveRaw(t, r.be, "strayfile", garbage)
			return "strayfile"
		}},
	}
	forEachLockBackend(t, func(t *testing.T, be backend.Backend, r1, _ *Repository) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				bad := tt.plant(t, r1)
				live := selfRec(t, false, "live shared")
				live.Hostname = otherHost
				good := plantLock(t, r1, live)
				defer r1.RemoveLocks(context.Background(), bad, good)

				infos, err := r1.Locks(t.Context(), LockOptions{})
				if err != nil {
					t.Fatal(err)
				}
				if len(infos) != 2 || infos[0].Name != good || infos[0].Record == nil {
					t.Fatalf("Locks = %+v, want the readable lock first", infos)
				}
				if li := infos[1]; li.Name != bad || li.Record != nil || li.Err == nil || li.Gate || li.Stale {
					t.Errorf("unreadable lock listed as %+v, want Err set and Record nil", li)
				} else {
					t.Logf("unreadable lock: %v", li.Err)
				}

				// A shared locker proceeds, with a warning.
				var rep reports
				opts := testLockOpts(false, "shared")
				opts.Report = rep.add
				sl, _ := mustLock(t, r1, opts)
				msgs := rep.all()
				if len(msgs) == 0 || !strings.Contains(msgs[0], "warning") || !strings.Contains(msgs[0], shortName(bad)) {
					t.Errorf("shared locker reported %q, want a warning about %s", msgs, shortName(bad))
				}
				if err := sl.Unlock(); err != nil {
					t.Fatal(err)
				}

				// An exclusive locker refuses.
				if err := r1.RemoveLocks(t.Context(), good); err != nil {
					t.Fatal(err)
				}
				l, _, err := r1.Lock(t.Context(), testLockOpts(true, "exclusive"))
				if err == nil {
					l.Unlock()
					t.Fatalf("exclusive lock succeeded beside an unreadable lock")
				}
				var le *LockedError
				if !errors.As(err, &le) || !le.Unreadable || le.Name != bad || le.Err == nil || le.Gate {
					t.Errorf("exclusive lock: %v (%+v), want *LockedError{Unreadable, Name: %s}", err, le, bad)
				}
				if !strings.Contains(err.Error(), "unreadable") || !strings.Contains(err.Error(), "unlock --remove-all") {
					t.Errorf("error %q does not explain the unreadable lock", err)
				}
				wantLockNames(t, be, bad)

				// RemoveLocks clears it (and a name already gone is fine).
				if err := r1.RemoveLocks(t.Context(), bad, bad, good); err != nil {
					t.Fatalf("RemoveLocks: %v", err)
				}
				wantLockNames(t, be)
				l, _ = mustLock(t, r1, testLockOpts(true, "exclusive"))
				wantLockNames(t, be, l.Name())
			})
		}
	})
}

// saveRaw stores data as locks/name, bypassing the repository's sealing.
func saveRaw(t *testing.T, be backend.Backend, name string, data []byte) {
	t.Helper()
	if err := be.Save(context.Background(), backend.Handle{Type: backend.LockFile, Name: name}, backend.NewByteReader(data)); err != nil {
		t.Fatalf("save locks/%s: %v", name, err)
	}
}

// TestLockListingDuringRefresh: a holder refreshes its lock (writes a new
// object, removes the old one) between another locker's listing of locks/
// and its loading of the listed objects. The locker must still see the
// holder.
func TestLockListingDuringRefresh(t *testing.T) {
	for _, tt := range []struct {
		name                 string
		holderExcl, lockExcl bool
	}{
		{"exclusive holder, exclusive locker", true, true},
		{"exclusive holder, shared locker", true, false},
		{"shared holder, exclusive locker", false, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			base := newLockBackend(t, lockBackends[0])
			rA := openTestRepo(t, base)
			hb := &hookBackend{Backend: base}
			rB := openTestRepo(t, hb)

			holder, hctx := mustLock(t, rA, testLockOpts(tt.holderExcl, "holder")) // refreshes every 5 minutes on its own
			// Force the interleaving: when B loads the holder's current
			// object, the holder refreshes just before. Twice, once for
			// each of B's two looks at locks/; a real holder refreshes
			// only every few minutes.
			var refreshes atomic.Int32
			hook := func(h backend.Handle) {
				if h.Type == backend.LockFile && h.Name == holder.Name() && refreshes.Load() < 2 {
					if err := holder.refresh(context.Background()); err != nil {
						t.Errorf("refresh: %v", err)
					}
					refreshes.Add(1)
				}
			}
			hb.beforeLoad.Store(&hook)

			l, _, err := rB.Lock(t.Context(), testLockOpts(tt.lockExcl, "locker"))
			hb.beforeLoad.Store(nil)
			t.Logf("holder refreshed %d times during the attempt", refreshes.Load())
			if err == nil {
				infos, _ := rA.Locks(context.Background(), LockOptions{})
				var held []string
				for _, li := range infos {
					if li.Record != nil {
						held = append(held, li.Record.String())
					}
				}
				l.Unlock()
				t.Fatalf("lock succeeded while the holder holds a conflicting lock; locks/ held: %s", strings.Join(held, "; "))
			}
			checkLockedError(t, err, holder.Record(), "")
			if hctx.Err() != nil {
				t.Errorf("holder lost its lock: %v", context.Cause(hctx))
			}
		})
	}
}

func TestProcessStart(t *testing.T) {
	t.Run("self", func(t *testing.T) {
		alive, start := processStart(os.Getpid())
		if !alive {
			t.Fatalf("this process is not alive")
		}
		if _, err := os.Stat("/proc/self/stat"); err == nil && start == 0 {
			t.Errorf("no start time for this process although /proc exists")
		}
		if alive2, start2 := processStart(os.Getpid()); !alive2 || start2 != start {
			t.Errorf("start time changed: %d then %d", start, start2)
		}
		if rec := selfRec(t, false, "x"); rec.ProcessStart != start || rec.PID != os.Getpid() || rec.BootID != bootID() {
			t.Errorf("self record %+v, want start %d", rec, start)
		}
	})
	t.Run("parent", func(t *testing.T) {
		if alive, _ := processStart(os.Getppid()); !alive {
			t.Errorf("parent process %d not alive", os.Getppid())
		}
	})
	t.Run("dead", func(t *testing.T) {
		pid := deadPID(t)
		if alive, start := processStart(pid); alive || start != 0 {
			t.Errorf("processStart(%d) = %v, %d for a reaped process", pid, alive, start)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		for _, pid := range []int{0, -1, -12345} {
			if alive, _ := processStart(pid); alive {
				t.Errorf("processStart(%d) alive", pid)
			}
		}
	})
	t.Run("zombie", func(t *testing.T) {
		if _, err := os.Stat("/proc/self/stat"); err != nil {
			t.Skip("no /proc")
		}
		cmd := exec.Command("true")
		if err := cmd.Start(); err != nil {
			t.Skipf("start true: %v", err)
		}
		defer cmd.Wait()
		pid := cmd.Process.Pid
		// Not waited for, the child stays a zombie once it exits.
		deadline := time.Now().Add(waitLong)
		for procState(pid) != "Z" {
			if time.Now().After(deadline) {
				t.Fatalf("child %d did not become a zombie (state %q)", pid, procState(pid))
			}
			time.Sleep(time.Millisecond)
		}
		if alive, _ := processStart(pid); alive {
			t.Errorf("zombie %d counted as alive", pid)
		}
		rec := selfRec(t, true, "zombie")
		rec.PID = pid
		if stale, reason := lockStale(&rec, time.Hour); !stale || !strings.Contains(reason, "is dead") {
			t.Errorf("lock of a zombie: stale=%v %q", stale, reason)
		}
	})
}

// procState is the state field of /proc/pid/stat, "" when unreadable.
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return ""
	}
	f := strings.Fields(s[i+1:])
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// TestLockSettle: the settle wait is skipped on a backend whose listings
// are consistent (a local directory on ext4 or tmpfs), unless asked for,
// and kept where they may lag (mem does not claim consistency).
func TestLockSettle(t *testing.T) {
	localBe := newLockBackend(t, lockBackends[1])
	if !localBe.Properties().ConsistentListing {
		t.Skipf("the test directory's file system is not one local.localFileSystems knows")
	}
	memBe := newLockBackend(t, lockBackends[0])
	for _, c := range []struct {
		name   string
		be     backend.Backend
		settle time.Duration
		want   time.Duration
	}{
		{"local default", localBe, 0, 0},
		{"local asked", localBe, 30 * time.Millisecond, 30 * time.Millisecond},
		{"mem default", memBe, 0, DefaultLockSettle},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := openTestRepo(t, c.be)
			l, _ := mustLock(t, r, LockOptions{Command: "settle", Settle: c.settle})
			if l.settle != c.want {
				t.Errorf("settle %v, want %v", l.settle, c.want)
			}
		})
	}
}
