package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"repo/repo"
)

// Lock modes a command declares in its "lock" annotation; openRepository
// takes the lock it names. A command whose mode depends on a flag (check
// --repair) sets the annotation before it opens the repository.
const (
	lockNone      = "none"
	lockShared    = "shared"
	lockExclusive = "exclusive"
)

// withLock declares the lock c takes when it opens the repository.
func withLock(c *cobra.Command, mode string) *cobra.Command {
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations["lock"] = mode
	return c
}

// lockMode is the lock c declares. A command without a declaration is a
// programming error, reported rather than run unlocked.
func lockMode(c *cobra.Command) (string, error) {
	if c == nil {
		return "", errors.New("internal error: no command to take a lock for")
	}
	switch m := c.Annotations["lock"]; m {
	case lockNone, lockShared, lockExclusive:
		return m, nil
	}
	return "", fmt.Errorf("internal error: command %q declares no lock", c.CommandPath())
}

// lockOptions builds the lock parameters: --retry-lock, the command line
// recorded in the lock, and the timing knobs REPO_LOCK_REFRESH,
// REPO_LOCK_STALE and REPO_LOCK_SETTLE (durations; for tests, which cannot
// wait half an hour for a lock to go stale).
func (g *globalOptions) lockOptions(exclusive bool) (repo.LockOptions, error) {
	opts := repo.LockOptions{
		Exclusive: exclusive,
		Command:   lockCommand(g.cmd),
		RetryFor:  g.retryLock,
		Report: func(msg string) {
			if g.json {
				// Not "lock": that is the item type of 'repo locks',
				// whose objects describe a lock field by field.
				printJSON(g.out, noticeJSON{"lock_notice", msg})
				return
			}
			fmt.Fprintln(g.err, msg)
		},
	}
	for _, k := range []struct {
		env string
		dst *time.Duration
	}{
		{"REPO_LOCK_REFRESH", &opts.Refresh},
		{"REPO_LOCK_STALE", &opts.Stale},
		{"REPO_LOCK_SETTLE", &opts.Settle},
	} {
		v := os.Getenv(k.env)
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return opts, usageError("%s=%q: want a positive duration such as 30s", k.env, v)
		}
		*k.dst = d
	}
	return opts, nil
}

// lockCommand is what a lock records as its holder's command: "repo" and
// the command path, plus the flags that change what it does to the
// repository.
func lockCommand(c *cobra.Command) string {
	s := c.CommandPath()
	if f := c.Flags().Lookup("repair"); f != nil && f.Changed {
		s += " --repair"
	}
	return s
}

// holdForTest keeps the lock, once taken, until the file named by
// REPO_LOCK_TEST_HOLD exists. It exists for the lock tests, which need a
// holder that stays put while other processes race against it; unset, it
// does nothing.
func holdForTest(ctx context.Context) error {
	path := os.Getenv("REPO_LOCK_TEST_HOLD")
	if path == "" {
		return nil
	}
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return context.Cause(ctx)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// lockAge renders how long ago t was, for lock listings.
func lockAge(t time.Time) string {
	d := time.Since(t)
	if d < 0 {
		d = 0
	}
	return formatDuration(d.Round(time.Second))
}

// openLocks opens the repository (unlock and locks take no lock) and lists
// its locks, judged with the stale age of this command line.
func (g *globalOptions) openLocks(ctx context.Context) (*repo.Repository, context.Context, []repo.LockInfo, func(), error) {
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	opts, err := g.lockOptions(false)
	if err == nil {
		var infos []repo.LockInfo
		if infos, err = r.Locks(ctx, opts); err == nil {
			return r, ctx, infos, closeRepo, nil
		}
	}
	closeRepo()
	return nil, nil, nil, nil, err
}

func newUnlockCmd(g *globalOptions) *cobra.Command {
	var removeAll bool
	c := &cobra.Command{
		Use:   "unlock",
		Short: "Remove stale locks (or, with --remove-all, every lock)",
		Long: `Remove stale locks: locks whose process on this host is gone, or that
were not refreshed for 30 minutes. Live locks are kept and listed.

Commands remove stale locks that are in their way by themselves, so unlock
is rarely needed. --remove-all removes every lock, live ones included, and
names the live-looking ones it breaks: use it only when you know that no
other repo process uses the repository (for example, a lock from a host
that no longer exists, or an unreadable lock file).

Examples:
  repo unlock
  repo unlock --remove-all

Exit codes: 0 ok, 1 error, 2 usage, 10 no repository, 12 wrong password.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, args []string) error {
			return runUnlock(c.Context(), g, removeAll)
		},
	}
	c.Flags().BoolVar(&removeAll, "remove-all", false, "remove all locks, also those of live processes")
	return withLock(c, lockNone)
}

// unlockJSON is one lock in 'repo unlock --json': message_type "removed"
// or "kept".
type unlockJSON struct {
	MessageType string `json:"message_type"`
	// Lock is the lock's id (its file name in locks/).
	Lock string `json:"lock"`
	// What describes its holder, as the text output does, or says that it
	// is unreadable.
	What   string `json:"what"`
	Reason string `json:"reason"`
}

// unlockSummary is the summary line of 'repo unlock --json'.
type unlockSummary struct {
	MessageType string `json:"message_type"`
	Removed     int    `json:"removed"`
	Kept        int    `json:"kept"`
}

func runUnlock(ctx context.Context, g *globalOptions, removeAll bool) error {
	r, ctx, infos, closeRepo, err := g.openLocks(ctx)
	if err != nil {
		return err
	}
	defer closeRepo()
	removed, kept := 0, 0
	for _, li := range infos {
		what := "unreadable lock"
		if li.Record != nil {
			what = li.Record.String()
		}
		var why string
		keep := false
		switch {
		case li.Record == nil && !removeAll:
			keep, why = true, fmt.Sprintf("unreadable: %v; remove it with --remove-all", li.Err)
		case li.Record == nil:
			why = fmt.Sprintf("unreadable: %v", li.Err)
		case li.Stale:
			why = li.StaleReason
		case removeAll:
			why = "LIVE, broken by --remove-all"
		default:
			keep, why = true, "live, refreshed "+lockAge(li.Record.Refreshed)+" ago"
		}
		if keep {
			kept++
			if g.json {
				printJSON(g.out, unlockJSON{"kept", li.Name, what, why})
			} else {
				g.verbosef("kept %s %s: %s", what, short(li.Name), why)
			}
			continue
		}
		if err := r.RemoveLocks(ctx, li.Name); err != nil {
			return err
		}
		removed++
		if g.json {
			printJSON(g.out, unlockJSON{"removed", li.Name, what, why})
		} else if !g.quiet {
			fmt.Fprintf(g.out, "removed %s %s: %s\n", what, short(li.Name), why)
		}
	}
	if g.json {
		printJSON(g.out, unlockSummary{"summary", removed, kept})
	} else if !g.quiet {
		fmt.Fprintf(g.out, "%d lock(s) removed, %d kept\n", removed, kept)
	}
	return nil
}

func newLocksCmd(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Use:     "locks",
		Aliases: []string{"list-locks"},
		Short:   "List the repository's locks and whether they are stale",
		Long: `List every lock in the repository: shared or exclusive, host, PID,
user, command, age, and whether it is stale (and why).

Examples:
  repo locks
  repo locks --json

Exit codes: 0 ok, 1 error, 2 usage, 10 no repository, 12 wrong password.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, args []string) error {
			return runLocks(c.Context(), g)
		},
	}
	return withLock(c, lockNone)
}

// lockJSON is one lock in 'repo locks --json'.
type lockJSON struct {
	MessageType string    `json:"message_type"`
	ID          string    `json:"id"`
	Gate        bool      `json:"gate,omitempty"`
	Exclusive   bool      `json:"exclusive"`
	Hostname    string    `json:"hostname,omitempty"`
	PID         int       `json:"pid,omitempty"`
	Username    string    `json:"username,omitempty"`
	Command     string    `json:"command,omitempty"`
	Created     time.Time `json:"created,omitzero"`
	Refreshed   time.Time `json:"refreshed,omitzero"`
	Stale       bool      `json:"stale"`
	StaleReason string    `json:"stale_reason,omitempty"`
	Error       string    `json:"error,omitempty"`
}

// locksSummary is the summary line of 'repo locks --json'.
type locksSummary struct {
	MessageType string `json:"message_type"`
	Locks       int    `json:"locks"`
}

func runLocks(ctx context.Context, g *globalOptions) error {
	_, _, infos, closeRepo, err := g.openLocks(ctx)
	if err != nil {
		return err
	}
	defer closeRepo()
	if g.json {
		for _, li := range infos {
			j := lockJSON{MessageType: "lock", ID: li.Name, Gate: li.Gate, Stale: li.Stale, StaleReason: li.StaleReason}
			if rec := li.Record; rec != nil {
				j.Exclusive, j.Hostname, j.PID, j.Username, j.Command = rec.Exclusive, rec.Hostname, rec.PID, rec.Username, rec.Command
				j.Created, j.Refreshed = rec.Created, rec.Refreshed
			} else {
				j.Error = li.Err.Error()
			}
			printJSON(g.out, j)
		}
		printJSON(g.out, locksSummary{"summary", len(infos)})
		return nil
	}
	if len(infos) == 0 {
		fmt.Fprintln(g.out, "no locks")
		return nil
	}
	tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKind\tHost\tPID\tUser\tCommand\tAge\tRefreshed\tState")
	for _, li := range infos {
		rec := li.Record
		if rec == nil {
			fmt.Fprintf(tw, "%s\t?\t\t\t\t\t\t\tunreadable: %v\n", short(li.Name), li.Err)
			continue
		}
		kind := "shared"
		if rec.Exclusive {
			kind = "exclusive"
		}
		if li.Gate {
			kind = "gate"
		}
		state := "live"
		if li.Stale {
			state = "stale: " + li.StaleReason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s ago\t%s\n", short(li.Name), kind, rec.Hostname, rec.PID,
			rec.Username, rec.Command, lockAge(rec.Created), lockAge(rec.Refreshed), state)
	}
	return tw.Flush()
}

// short abbreviates a lock name for listings.
func short(name string) string {
	if len(name) > 8 {
		return name[:8]
	}
	return name
}
