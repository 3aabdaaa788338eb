package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/user"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"repo/backend"
	"repo/chunk"
)

// Lock timing defaults (DESIGN.md, "Locks"). LockOptions can change them;
// tests use seconds instead of minutes.
const (
	DefaultLockRefresh = 5 * time.Minute
	DefaultLockStale   = 30 * time.Minute
	DefaultLockSettle  = 200 * time.Millisecond
)

// gateName is the fixed name of the exclusive-acquisition gate in locks/.
// It is not a hex id, so lock listings tell it apart from lock records.
const gateName = "exclusive"

// LockRecord is the content of a lock object; its JSON form is part of the
// repository format (docs/format.md). Objects in locks/ are sealed like all
// others and named by the hash of their sealed bytes, so every refresh
// writes a new object and removes the previous one.
type LockRecord struct {
	Exclusive bool   `json:"exclusive"`
	Hostname  string `json:"hostname"`
	PID       int    `json:"pid"`
	// ProcessStart is the holder's start time in clock ticks after boot
	// (/proc/PID/stat field 22) and BootID the kernel's boot id: together
	// with PID they identify one process, so a PID reused after the holder
	// died, or a reboot, is not mistaken for the holder.
	ProcessStart uint64    `json:"process_start,omitempty"`
	BootID       string    `json:"boot_id,omitempty"`
	Username     string    `json:"username,omitempty"`
	UID          int       `json:"uid"`
	Command      string    `json:"command"`
	Created      time.Time `json:"created"`
	Refreshed    time.Time `json:"refreshed"`
}

// String names the holder for messages: "exclusive lock of host PID 12
// (repo prune)".
func (r *LockRecord) String() string {
	kind := "shared"
	if r.Exclusive {
		kind = "exclusive"
	}
	return fmt.Sprintf("%s lock of %s PID %d (%s)", kind, r.Hostname, r.PID, r.Command)
}

// LockInfo is one object found in locks/: its record, or why it could not
// be read, and whether it is stale.
type LockInfo struct {
	// Name is the object's name in locks/ (a hex id, or the gate's name).
	Name string
	// Gate is true for the exclusive-acquisition gate (see Lock).
	Gate bool
	// Record is nil when the object could not be loaded or decoded; Err
	// says why.
	Record *LockRecord
	Err    error
	// Stale and StaleReason: the holder is gone (see LockOptions.Stale).
	Stale       bool
	StaleReason string
}

// LockedError: a live lock of another process conflicts with the one asked
// for. The command line maps it to exit code 11.
type LockedError struct {
	Holder LockRecord
	Name   string // the holder's object name in locks/
	// Gate is true when the holder is another exclusive locker between
	// writing its lock and confirming it.
	Gate bool
	// Unreadable is set instead of Holder when the conflicting object
	// cannot be read (Err says why).
	Unreadable bool
	Err        error
}

func (e *LockedError) Error() string {
	if e.Unreadable {
		return fmt.Sprintf("repository is locked by an unreadable lock %s: %v; if no other repo process uses the repository, remove it with 'repo unlock --remove-all'", shortName(e.Name), e.Err)
	}
	h := &e.Holder
	kind := "a shared"
	if h.Exclusive {
		kind = "an exclusive"
	}
	verb := "locked by"
	if e.Gate {
		verb, kind = "being locked by", "an exclusive"
	}
	return fmt.Sprintf("repository is %s %s PID %d (%s, %s lock, created %s ago, refreshed %s ago, lock %s)",
		verb, h.Hostname, h.PID, h.Command, kind, roundAge(nowWall().Sub(h.Created)), roundAge(nowWall().Sub(h.Refreshed)), shortName(e.Name))
}

// ErrLockLost: the lock this process held was removed by someone else, or
// could not be refreshed for so long that others may consider it stale. The
// operation under the lock is cancelled with this cause.
var ErrLockLost = errors.New("repository lock lost")

// LockOptions configure Lock.
type LockOptions struct {
	Exclusive bool
	// Command is recorded in the lock, e.g. "backup" or "check --repair".
	Command string
	// RetryFor: how long to keep trying while a live lock conflicts; zero
	// fails at once with *LockedError.
	RetryFor time.Duration
	// Refresh interval; zero means DefaultLockRefresh.
	Refresh time.Duration
	// Stale: a lock not refreshed for this long is stale; zero means
	// DefaultLockStale. Must exceed Refresh.
	Stale time.Duration
	// Settle: the pause between writing a lock and listing again, which
	// lets a racing writer's object become visible; zero means
	// DefaultLockSettle.
	Settle time.Duration
	// Report receives one line for each stale lock removed (may be nil).
	Report func(msg string)
}

func (o *LockOptions) defaults() {
	if o.Refresh <= 0 {
		o.Refresh = DefaultLockRefresh
	}
	if o.Stale <= 0 {
		o.Stale = DefaultLockStale
	}
	if o.Stale <= o.Refresh {
		// A short stale age given alone (tests) brings the refresh
		// interval down with it rather than being overruled by it.
		o.Refresh = o.Stale / 6
	}
	if o.Settle <= 0 {
		o.Settle = DefaultLockSettle
	}
	if o.Report == nil {
		o.Report = func(string) {}
	}
}

// gateStale is when a gate is stale: a gate is held only while acquiring,
// a few backend round trips.
func (o *LockOptions) gateStale() time.Duration {
	return min(o.Stale, time.Minute)
}

// abortAfter is how long the holder may go without a successful refresh
// before it cancels its operation: a margin before others would consider
// its lock stale (one refresh interval, at most a quarter of the stale
// age), so it never writes under a lock that someone else may already
// have removed, yet a refresh that is merely due never counts as failed.
func (o *LockOptions) abortAfter() time.Duration {
	return o.Stale - min(o.Refresh, o.Stale/4)
}

// refreshEvery is the refresh interval actually used: the configured one,
// but soon enough that a refresh that is due comes well before the holder
// would give up (abortAfter), whatever the stale age.
func (l *Lock) refreshEvery() time.Duration {
	return min(l.opts.Refresh, l.opts.abortAfter()/2)
}

// Lock is a lock held on the repository, refreshed in the background until
// Unlock.
type Lock struct {
	r    *Repository
	opts LockOptions
	// settle is the wait between writing the lock and listing again:
	// opts.Settle, or zero on a backend with consistent listings.
	settle time.Duration

	mu sync.Mutex
	// name is the current object in locks/; rec its content. lastRefresh
	// is the wall time of the last successful write (without monotonic
	// reading, so a suspended machine's sleep counts).
	name        string
	rec         LockRecord
	lastRefresh time.Time

	// leftover holds earlier objects of this lock that a refresh could
	// not remove; Unlock removes them.
	leftover []string

	// warned holds the unreadable locks already reported while acquiring.
	warned map[string]bool

	// lost is the error the lock was lost with, once it was.
	lost atomic.Pointer[error]

	cancel     context.CancelCauseFunc
	unlockOnce sync.Once
	stop       chan struct{}
	done       chan struct{}
}

// nowWall is the current wall-clock time without its monotonic reading:
// lock ages are compared across processes and hosts, and must include time
// spent suspended.
func nowWall() time.Time { return now().Round(0) }

// Lock acquires a lock on the repository (DESIGN.md, "Locks"; docs/locks.md)
// and returns it with a context derived from ctx that is cancelled, with
// ErrLockLost as its cause, if the lock is lost. The operation under the
// lock must use the returned context. Conflicting stale locks are removed
// (reported through opts.Report); a live conflicting lock makes Lock fail
// with *LockedError, after retrying for opts.RetryFor.
//
// Two exclusive lockers never both succeed: each writes its lock, waits
// opts.Settle, lists again, and withdraws if a conflicting lock is visible.
// On a backend with read-after-write listing, of two racers the one that
// lists second always sees the first. So that one of many exclusive racers
// does win, they first take the gate, a fixed-name object created with
// exclusive create where the backend has it; the gate only serves
// progress, never safety.
func (r *Repository) Lock(ctx context.Context, opts LockOptions) (*Lock, context.Context, error) {
	// The settle wait only helps where listings may lag; on a backend
	// whose listings are read-after-write consistent it is skipped unless
	// the caller asked for one.
	skipSettle := opts.Settle <= 0 && r.be.Properties().ConsistentListing
	opts.defaults()
	self, err := selfRecord(opts)
	if err != nil {
		return nil, nil, err
	}
	l := &Lock{r: r, opts: opts, rec: self, warned: map[string]bool{}, settle: opts.Settle}
	if skipSettle {
		l.settle = 0
	}
	deadline := time.Now().Add(opts.RetryFor)
	backoff := 100 * time.Millisecond
	races := 0
	for {
		err := l.try(ctx)
		if err == nil {
			break
		}
		var le *LockedError
		if !errors.As(err, &le) {
			return nil, nil, err
		}
		wait := backoff/2 + rand.N(backoff)
		if errors.Is(err, errLockRace) && races < 5 {
			// Both racers withdrew; one of them wins the next round.
			races++
			wait = rand.N(2 * opts.Settle)
		} else {
			if time.Until(deadline) < wait {
				return nil, nil, le
			}
			backoff = min(2*backoff, 5*time.Second)
		}
		if err := sleepCtx(ctx, wait); err != nil {
			return nil, nil, err
		}
	}
	lctx, cancel := context.WithCancelCause(ctx)
	l.cancel = cancel
	l.stop = make(chan struct{})
	l.done = make(chan struct{})
	go l.refreshLoop()
	r.lock.Store(l)
	return l, lctx, nil
}

// errLockRace marks a conflict seen only after writing our lock: the other
// side may withdraw too, so a short retry is worth it.
var errLockRace = errors.New("lock race")

type raceError struct{ *LockedError }

func (e raceError) Unwrap() []error { return []error{e.LockedError, errLockRace} }

// try makes one attempt to acquire the lock.
func (l *Lock) try(ctx context.Context) error {
	if err := l.checkConflicts(ctx, ""); err != nil {
		return err
	}
	if l.opts.Exclusive {
		release, err := l.takeGate(ctx)
		if err != nil {
			return err
		}
		defer release()
	}
	rec := l.rec
	rec.Refreshed = nowWall()
	rec.Created = rec.Refreshed
	name, err := l.r.saveLock(ctx, &rec)
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, l.settle); err != nil {
		l.r.removeLock(context.WithoutCancel(ctx), name)
		return err
	}
	if err := l.checkConflicts(ctx, name); err != nil {
		l.r.removeLock(context.WithoutCancel(ctx), name)
		var le *LockedError
		if errors.As(err, &le) {
			return raceError{le}
		}
		return err
	}
	l.mu.Lock()
	l.name, l.rec, l.lastRefresh = name, rec, rec.Refreshed
	l.mu.Unlock()
	return nil
}

// checkConflicts lists locks/ and returns a *LockedError for the first live
// lock that conflicts with ours (skipping our own object, ours). Stale
// conflicting locks are removed. An unreadable lock conflicts with an
// exclusive lock only: a shared user is safe beside anything that repo
// itself wrote, and refusing it would stop all backups for one bad file.
func (l *Lock) checkConflicts(ctx context.Context, ours string) error {
	infos, err := l.r.Locks(ctx, l.opts)
	if err != nil {
		return err
	}
	for _, li := range infos {
		if li.Name == ours || li.Gate {
			continue
		}
		if li.Record == nil {
			if l.opts.Exclusive {
				return &LockedError{Name: li.Name, Unreadable: true, Err: li.Err}
			}
			if !l.warned[li.Name] {
				l.warned[li.Name] = true
				l.opts.Report(fmt.Sprintf("warning: ignoring unreadable lock %s: %v", shortName(li.Name), li.Err))
			}
			continue
		}
		if !l.opts.Exclusive && !li.Record.Exclusive {
			continue
		}
		if li.Stale {
			if err := l.r.removeLock(ctx, li.Name); err != nil && !errors.Is(err, backend.ErrNotExist) {
				return fmt.Errorf("remove stale lock %s: %w", shortName(li.Name), err)
			}
			l.opts.Report(fmt.Sprintf("removed stale %s: %s", li.Record, li.StaleReason))
			continue
		}
		return &LockedError{Holder: *li.Record, Name: li.Name}
	}
	return nil
}

// takeGate creates the gate object, removing a stale one first, and
// returns the function that removes it again.
func (l *Lock) takeGate(ctx context.Context) (func(), error) {
	h := backend.Handle{Type: backend.LockFile, Name: gateName}
	rec := l.rec
	rec.Created, rec.Refreshed = nowWall(), nowWall()
	plain, err := json.Marshal(&rec)
	if err != nil {
		return nil, err
	}
	sealed := l.r.sealer.Seal(nil, plain)
	// release removes the gate if it is still ours: after a stale-gate
	// mix-up another locker may hold it now.
	release := func() {
		rctx := context.WithoutCancel(ctx)
		if got, err := backend.LoadAll(rctx, l.r.be, h, nil); err == nil && string(got) == string(sealed) {
			_ = l.r.be.Remove(rctx, h)
		}
	}
	for attempt := 0; ; attempt++ {
		if !l.r.be.Properties().ExclusiveCreate {
			// Check, write, wait, read back: the last writer keeps the
			// gate. Good enough for progress, which is all it serves.
			_, err := l.r.be.Stat(ctx, h)
			switch {
			case err == nil:
				err = backend.ErrExists
			case errors.Is(err, backend.ErrNotExist):
				err = l.r.be.Save(ctx, h, backend.NewByteReader(sealed))
				if err == nil {
					if err := sleepCtx(ctx, l.opts.Settle/2); err != nil {
						release()
						return nil, err
					}
					got, lerr := backend.LoadAll(ctx, l.r.be, h, nil)
					if lerr == nil && string(got) == string(sealed) {
						return release, nil
					}
					err = backend.ErrExists
				}
			}
			if !errors.Is(err, backend.ErrExists) {
				return nil, fmt.Errorf("create lock gate: %w", err)
			}
		} else {
			err := l.r.be.Save(ctx, h, backend.NewByteReader(sealed))
			if err == nil {
				return release, nil
			}
			if !errors.Is(err, backend.ErrExists) {
				return nil, fmt.Errorf("create lock gate: %w", err)
			}
		}
		// The gate is taken: name its holder, or clear it if stale.
		li := l.r.loadLockInfo(ctx, gateName, l.opts)
		if li.Err != nil && errors.Is(li.Err, backend.ErrNotExist) && attempt < 3 {
			continue // released meanwhile
		}
		if li.Record == nil {
			return nil, &LockedError{Name: gateName, Unreadable: true, Err: li.Err}
		}
		if li.Stale && attempt < 3 {
			if err := l.r.be.Remove(ctx, h); err != nil && !errors.Is(err, backend.ErrNotExist) {
				return nil, fmt.Errorf("remove stale lock gate: %w", err)
			}
			l.opts.Report(fmt.Sprintf("removed stale lock gate of %s PID %d (%s): %s", li.Record.Hostname, li.Record.PID, li.Record.Command, li.StaleReason))
			continue
		}
		return nil, &LockedError{Holder: *li.Record, Name: gateName, Gate: true}
	}
}

// Name is the lock's current object name in locks/.
func (l *Lock) Name() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.name
}

// Record is the lock's current content.
func (l *Lock) Record() LockRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec
}

// Valid returns an error wrapping ErrLockLost when the lock was lost or has
// gone unrefreshed so long that others may consider it stale. Callers check
// it before a write that commits their work (a snapshot), so that a
// suspended process does not commit after waking up under a lock that
// someone may have broken.
func (l *Lock) Valid() error {
	if err := l.lost.Load(); err != nil {
		return *err
	}
	l.mu.Lock()
	last := l.lastRefresh
	l.mu.Unlock()
	if age := nowWall().Sub(last); age > l.opts.abortAfter() {
		return fmt.Errorf("%w: not refreshed for %s, others may consider it stale", ErrLockLost, roundAge(age))
	}
	return nil
}

// Check is Valid plus a look at the backend: it fails with ErrLockLost
// when the lock object is gone, so a holder whose lock was removed does not
// commit work before its next refresh notices.
func (l *Lock) Check(ctx context.Context) error {
	if err := l.Valid(); err != nil {
		return err
	}
	name := l.Name()
	_, err := l.r.be.Stat(ctx, backend.Handle{Type: backend.LockFile, Name: name})
	if errors.Is(err, backend.ErrNotExist) {
		// A refresh may have replaced the object meanwhile.
		if cur := l.Name(); cur != name {
			return l.Check(ctx)
		}
		err = fmt.Errorf("%w: lock %s was removed by another process", ErrLockLost, shortName(name))
		l.lose(err)
		return err
	}
	if err != nil {
		return fmt.Errorf("check lock: %w", err)
	}
	return nil
}

// refreshLoop rewrites the lock every Refresh interval, and cancels the
// operation when the lock is lost.
func (l *Lock) refreshLoop() {
	defer close(l.done)
	// Wake up more often than the interval: the timer runs on the
	// monotonic clock, which stops while the machine is suspended, but
	// staleness is judged by wall time.
	tick := time.NewTicker(max(l.opts.Refresh/10, time.Millisecond))
	defer tick.Stop()
	ctx := context.Background()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		// Valid first: after a suspension the lock may look stale to
		// others already, and then the operation stops even if a refresh
		// would still succeed now.
		if err := l.Valid(); err != nil {
			l.lose(err)
			return
		}
		l.mu.Lock()
		due := nowWall().Sub(l.lastRefresh) >= l.refreshEvery()
		l.mu.Unlock()
		if due {
			err := l.refresh(ctx)
			if errors.Is(err, ErrLockLost) {
				l.lose(err)
				return
			}
			// Other errors are retried at the next tick; Valid gives up
			// in time.
		}
	}
}

// lose records that the lock is lost and cancels the operation under it.
func (l *Lock) lose(err error) {
	l.lost.Store(&err)
	l.cancel(err)
}

// refresh writes a new lock object with a new refreshed time and removes
// the previous one. When the previous one is gone, someone removed our lock:
// the new object is withdrawn and ErrLockLost returned.
func (l *Lock) refresh(ctx context.Context) error {
	l.mu.Lock()
	old, rec := l.name, l.rec
	l.mu.Unlock()
	oldH := backend.Handle{Type: backend.LockFile, Name: old}
	if _, err := l.r.be.Stat(ctx, oldH); errors.Is(err, backend.ErrNotExist) {
		return fmt.Errorf("%w: lock %s was removed by another process", ErrLockLost, shortName(old))
	} else if err != nil {
		return err
	}
	rec.Refreshed = nowWall()
	name, err := l.r.saveLock(ctx, &rec)
	if err != nil {
		return err
	}
	// The new object is the lock from now on: Check, which may run
	// concurrently, must never look for the old one after it is removed.
	l.mu.Lock()
	l.name, l.rec, l.lastRefresh = name, rec, rec.Refreshed
	l.mu.Unlock()
	if err := l.r.be.Remove(ctx, oldH); err != nil {
		if errors.Is(err, backend.ErrNotExist) {
			l.r.removeLock(ctx, name)
			return fmt.Errorf("%w: lock %s was removed by another process", ErrLockLost, shortName(old))
		}
		// Both objects exist now; both name this process, so neither
		// misleads, and the old one is removed with the lock at Unlock.
		l.mu.Lock()
		l.leftover = append(l.leftover, old)
		l.mu.Unlock()
	}
	return nil
}

// Unlock stops refreshing and removes the lock. It uses its own context so
// that it works after the operation's context was cancelled (Ctrl-C),
// bounded to 10 s: a lock it cannot remove (the server is gone) is stale
// at once for commands on this host once the process exits, and after the
// stale age for others.
func (l *Lock) Unlock() error {
	if l.stop == nil {
		return nil
	}
	first := false
	l.unlockOnce.Do(func() { first = true })
	if !first {
		return nil // already unlocked
	}
	close(l.stop)
	<-l.done
	l.cancel(context.Canceled)
	l.r.lock.CompareAndSwap(l, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l.mu.Lock()
	names := append([]string{l.name}, l.leftover...)
	l.mu.Unlock()
	return l.r.RemoveLocks(ctx, names...)
}

// saveLock seals rec and stores it in locks/, returning its name.
func (r *Repository) saveLock(ctx context.Context, rec *LockRecord) (string, error) {
	plain, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	id, err := r.SaveUnpacked(ctx, backend.LockFile, plain)
	if err != nil {
		return "", fmt.Errorf("write lock: %w", err)
	}
	return id.String(), nil
}

// removeLock removes the object name from locks/.
func (r *Repository) removeLock(ctx context.Context, name string) error {
	return r.be.Remove(ctx, backend.Handle{Type: backend.LockFile, Name: name})
}

// Locks lists every object in locks/ with its record and staleness, sorted
// by creation time (unreadable ones last). opts supplies the stale age.
func (r *Repository) Locks(ctx context.Context, opts LockOptions) ([]LockInfo, error) {
	opts.defaults()
	var infos []LockInfo
	// An object that vanished between listing and loading was released,
	// or replaced by a refresh, which writes the new object before it
	// removes the old: a listing made after the vanishing shows the new one.
	// So list again until nothing vanishes.
	for attempt := 0; ; attempt++ {
		var names []string
		if err := r.be.List(ctx, backend.LockFile, func(fi backend.FileInfo) error {
			names = append(names, fi.Name)
			return nil
		}); err != nil {
			return nil, fmt.Errorf("list locks: %w", err)
		}
		infos = make([]LockInfo, 0, len(names))
		vanished := false
		for _, name := range names {
			li := r.loadLockInfo(ctx, name, opts)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if errors.Is(li.Err, backend.ErrNotExist) {
				vanished = true
				continue
			}
			infos = append(infos, li)
		}
		if !vanished || attempt == 20 {
			break
		}
	}
	sort.SliceStable(infos, func(i, j int) bool {
		a, b := infos[i].Record, infos[j].Record
		if a == nil || b == nil {
			return b == nil && a != nil
		}
		return a.Created.Before(b.Created)
	})
	return infos, nil
}

// loadLockInfo loads and judges one object of locks/.
func (r *Repository) loadLockInfo(ctx context.Context, name string, opts LockOptions) LockInfo {
	li := LockInfo{Name: name, Gate: name == gateName}
	var plain []byte
	var err error
	if li.Gate {
		var sealed []byte
		sealed, err = backend.LoadAll(ctx, r.be, backend.Handle{Type: backend.LockFile, Name: name}, nil)
		if err == nil {
			plain, err = r.sealer.Open(nil, sealed)
		}
	} else {
		var id chunk.ID
		id, err = chunk.ParseID(name)
		if err == nil {
			plain, err = r.LoadUnpacked(ctx, backend.LockFile, id)
		} else {
			err = fmt.Errorf("not a lock name: %w", err)
		}
	}
	if err != nil {
		li.Err = err
		return li
	}
	var rec LockRecord
	if err := json.Unmarshal(plain, &rec); err != nil {
		li.Err = fmt.Errorf("decode lock: %w", err)
		return li
	}
	li.Record = &rec
	stale := opts.Stale
	if li.Gate {
		stale = opts.gateStale()
	}
	li.Stale, li.StaleReason = lockStale(&rec, stale)
	return li
}

// lockStale reports whether the holder of rec is gone, and why: not
// refreshed for longer than staleAge, or, on this host, its process is dead
// or its PID now belongs to another process, or the host rebooted.
func lockStale(rec *LockRecord, staleAge time.Duration) (bool, string) {
	if age := nowWall().Sub(rec.Refreshed); age > staleAge {
		return true, fmt.Sprintf("not refreshed for %s", roundAge(age))
	}
	host, err := os.Hostname()
	if err != nil || host != rec.Hostname {
		return false, ""
	}
	if boot := bootID(); boot != "" && rec.BootID != "" && boot != rec.BootID {
		return true, "the host rebooted since it was written"
	}
	alive, start := processStart(rec.PID)
	switch {
	case !alive:
		return true, fmt.Sprintf("process %d is dead", rec.PID)
	case rec.ProcessStart != 0 && start != 0 && start != rec.ProcessStart:
		return true, fmt.Sprintf("PID %d now belongs to another process", rec.PID)
	}
	return false, ""
}

// selfRecord describes this process as a lock holder.
func selfRecord(opts LockOptions) (LockRecord, error) {
	host, err := os.Hostname()
	if err != nil {
		return LockRecord{}, fmt.Errorf("lock: hostname: %w", err)
	}
	rec := LockRecord{
		Exclusive: opts.Exclusive,
		Hostname:  host,
		PID:       os.Getpid(),
		BootID:    bootID(),
		UID:       os.Getuid(),
		Command:   opts.Command,
	}
	_, rec.ProcessStart = processStart(rec.PID)
	if u, err := user.Current(); err == nil {
		rec.Username = u.Username
	}
	return rec, nil
}

// RemoveLocks removes lock objects by name (for unlock); a name already gone
// is not an error.
func (r *Repository) RemoveLocks(ctx context.Context, names ...string) error {
	for _, n := range names {
		if err := r.removeLock(ctx, n); err != nil && !errors.Is(err, backend.ErrNotExist) {
			return fmt.Errorf("remove lock %s: %w", shortName(n), err)
		}
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// shortName abbreviates a lock object name for messages.
func shortName(name string) string {
	if len(name) > 8 {
		return name[:8]
	}
	return name
}

// roundAge renders a duration for humans: whole seconds, or tenths below
// ten seconds.
func roundAge(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// parseUint is strconv.ParseUint for the /proc parsers.
func parseUint(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}
