package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"repo/chunk"
	"repo/repo"
)

// forgetOptions are the flags of forget.
type forgetOptions struct {
	last, hourly, daily, weekly, monthly, yearly int
	within                                       string
	keepTags                                     []string
	groupBy                                      string
	filterFlags
	dryRun    bool
	prune     bool
	maxUnused string
}

// policyFlags are the flags that make a policy; groupAndFilterFlags only
// make sense with one.
var (
	policyFlags         = []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "keep-within", "keep-tag"}
	groupAndFilterFlags = []string{"group-by", "host", "tag", "path"}
)

func newForgetCmd(g *globalOptions) *cobra.Command {
	var o forgetOptions
	c := &cobra.Command{
		Use:   "forget [flags] SNAPSHOT... | --keep-* POLICY",
		Short: "Remove snapshots, by id or by a retention policy",
		Long: `Remove the given snapshots (ids, unique id prefixes or "latest"), or
those a retention policy does not keep. The data they alone reference
stays in the repository until a prune (--prune runs one right after).
forget takes the exclusive lock.

A policy is applied to each group of snapshots separately (by default the
snapshots of the same host and paths; see --group-by), newest first, and
keeps a snapshot when any rule keeps it:

  --keep-last N      the N newest snapshots
  --keep-hourly N    the newest snapshot of each of the last N hours that
                     have a snapshot (hours without one are not counted;
                     N = -1: of every hour)
  --keep-daily N     the same for days,
  --keep-weekly N    ISO weeks (Monday to Sunday),
  --keep-monthly N   months
  --keep-yearly N    and years
  --keep-within D    every snapshot newer than the group's latest minus D:
                     1y6m, 14d, 36h (y years, m MONTHS, d days, h hours,
                     counted on the calendar) or a Go duration like 90m0s
  --keep-tag TAG     every snapshot with that tag (repeatable: any of them)

Hours, days, weeks, months and years are those of the local time zone
(set TZ to use another). A policy without any rule is refused: it would
remove everything. --dry-run lists what would be kept and removed, and
why, and changes nothing; with --prune it also shows what the prune would
free, counting the snapshots to remove as gone. See docs/retention.md.

Examples:
  repo forget 3fa2b1c4 77d0e5aa
  repo forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --dry-run
  repo forget --keep-within 30d --keep-monthly 24 --prune
  repo forget --keep-last 10 --prune --dry-run
  repo forget --host db1 --keep-last 10 --keep-tag release

Exit codes: 0 ok, 1 error (e.g. a snapshot not found; the others given are
still removed), 2 usage, 10 no repository, 11 repository locked,
12 wrong password.`,
		RunE: func(c *cobra.Command, args []string) error {
			return runForget(c, g, o, args)
		},
	}
	f := c.Flags()
	f.IntVar(&o.last, "keep-last", 0, "keep the `N` newest snapshots")
	f.IntVar(&o.hourly, "keep-hourly", 0, "keep the newest snapshot of each of the last `N` hours that have one (-1: all)")
	f.IntVar(&o.daily, "keep-daily", 0, "keep the newest snapshot of each of the last `N` days that have one (-1: all)")
	f.IntVar(&o.weekly, "keep-weekly", 0, "keep the newest snapshot of each of the last `N` ISO weeks that have one (-1: all)")
	f.IntVar(&o.monthly, "keep-monthly", 0, "keep the newest snapshot of each of the last `N` months that have one (-1: all)")
	f.IntVar(&o.yearly, "keep-yearly", 0, "keep the newest snapshot of each of the last `N` years that have one (-1: all)")
	f.StringVar(&o.within, "keep-within", "", "keep snapshots newer than the group's latest minus `duration` (e.g. 1y6m, 14d, 36h; m is months)")
	f.StringArrayVar(&o.keepTags, "keep-tag", nil, "keep snapshots with `tag` (repeatable: any of them)")
	f.StringVar(&o.groupBy, "group-by", repo.DefaultGroupBy.String(), "apply the policy separately per `fields` (host, paths, tags; comma-separated, '' for one group)")
	o.addFlags(f, "policy: ")
	f.BoolVarP(&o.dryRun, "dry-run", "n", false, "show what would be kept and removed, and why; change nothing")
	f.BoolVar(&o.prune, "prune", false, "run prune after removing snapshots (see 'repo prune --help')")
	f.StringVar(&o.maxUnused, "max-unused", "5%", "with --prune: see 'repo prune --help'")
	return withLock(c, lockExclusive)
}

// changedFlags returns those of names that were given on the command line.
func changedFlags(fs *pflag.FlagSet, names []string) []string {
	var out []string
	for _, n := range names {
		if fs.Changed(n) {
			out = append(out, "--"+n)
		}
	}
	return out
}

// policy turns the flags into a policy, or a usage error.
func (o forgetOptions) policy() (repo.Policy, error) {
	p := repo.Policy{Last: o.last, Hourly: o.hourly, Daily: o.daily, Weekly: o.weekly, Monthly: o.monthly, Yearly: o.yearly, Tags: o.keepTags}
	for _, n := range []struct {
		name string
		v    int
	}{{"keep-last", o.last}, {"keep-hourly", o.hourly}, {"keep-daily", o.daily}, {"keep-weekly", o.weekly}, {"keep-monthly", o.monthly}, {"keep-yearly", o.yearly}} {
		if n.v < -1 {
			return p, usageError("--%s %d: want a count, or -1 for all", n.name, n.v)
		}
	}
	for _, t := range o.keepTags {
		if t == "" {
			return p, usageError("--keep-tag: the tag is empty")
		}
	}
	if o.within != "" {
		d, err := repo.ParseCalendarDuration(o.within)
		if err != nil {
			return p, usageError("--keep-within: %v", err)
		}
		if d.IsZero() {
			return p, usageError("--keep-within %s keeps nothing; leave it out or give a longer duration", o.within)
		}
		p.Within = d
	}
	if p.Empty() {
		return p, usageError("the policy keeps nothing and would remove every snapshot; give at least one --keep-* rule with a count other than 0")
	}
	return p, nil
}

// forgetDecisionJSON is what forget --json says of each snapshot it
// considers (with a policy, or with ids in a dry run).
type forgetDecisionJSON struct {
	MessageType string    `json:"message_type"` // "snapshot"
	Action      string    `json:"action"`       // "keep" or "remove"
	SnapshotID  string    `json:"snapshot_id"`
	ShortID     string    `json:"short_id"`
	Time        time.Time `json:"time"`
	Hostname    string    `json:"hostname"`
	Paths       []string  `json:"paths"`
	Tags        []string  `json:"tags,omitempty"`
	// Reasons are the rules that keep the snapshot ("daily", "tag
	// release"); empty for one to remove.
	Reasons []string `json:"reasons"`
}

// forgetRemovedJSON reports a snapshot forget removed.
type forgetRemovedJSON struct {
	MessageType string `json:"message_type"` // "removed"
	SnapshotID  string `json:"snapshot_id"`
}

// forgetSummary is the summary line of forget --json.
type forgetSummary struct {
	MessageType string `json:"message_type"`
	DryRun      bool   `json:"dry_run"`
	Removed     int    `json:"removed"`
	// WouldRemove is set in a dry run only: what the real run removes.
	WouldRemove *int `json:"would_remove,omitempty"`
	// Kept is set with a policy only: the snapshots it keeps.
	Kept *int `json:"kept,omitempty"`
	// Prune is the result of --prune, when it ran.
	Prune *repo.PruneResult `json:"prune,omitempty"`
}

func runForget(c *cobra.Command, g *globalOptions, o forgetOptions, refs []string) error {
	fs := c.Flags()
	policySet := changedFlags(fs, policyFlags)
	others := changedFlags(fs, groupAndFilterFlags)
	switch {
	case len(refs) > 0 && len(policySet) > 0:
		return usageError("give either snapshot ids or a policy (%s), not both", strings.Join(policySet, ", "))
	case len(refs) > 0 && len(others) > 0:
		return usageError("%s select snapshots for a policy; they cannot be combined with snapshot ids", strings.Join(others, ", "))
	case len(refs) == 0 && len(policySet) == 0:
		return usageError("give the snapshots to remove, or a policy such as --keep-daily 7 (see '%s --help')", c.CommandPath())
	}
	if fs.Changed("max-unused") && !o.prune {
		return usageError("--max-unused needs --prune")
	}
	maxUnused, err := parseMaxUnused(o.maxUnused)
	if err != nil {
		return usageError("%v", err)
	}
	var (
		p  repo.Policy
		by repo.GroupBy
	)
	if len(refs) == 0 {
		if p, err = o.policy(); err != nil {
			return err
		}
		if by, err = repo.ParseGroupBy(o.groupBy); err != nil {
			return usageError("--group-by: %v", err)
		}
	}

	ctx := c.Context()
	// --prune shows its progress as prune does. The display takes over
	// g.out, so it starts before anything runs (see progressUI); forget
	// alone starts no phase and shows nothing.
	ui := g.startProgress()
	defer ui.stop()
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	var (
		remove  []*repo.Snapshot
		kept    int
		missing int   // ids not found
		missErr error // the first of them
	)
	if len(refs) > 0 {
		remove, missing, missErr, err = findForgetSnapshots(ctx, g, r, refs, o.dryRun)
	} else {
		remove, kept, err = applyForgetPolicy(ctx, g, r, o, p, by)
	}
	if err != nil {
		return err
	}
	if o.dryRun {
		// --prune is simulated with the snapshots to remove counted as
		// gone: what prune would free after this forget.
		var pruneRes *repo.PruneResult
		if o.prune && len(remove) > 0 && missErr == nil {
			ids := make([]chunk.ID, len(remove))
			for i, sn := range remove {
				ids[i] = sn.ID
			}
			res, err := r.Prune(ctx, repo.PruneOptions{
				MaxUnused: maxUnused,
				DryRun:    true,
				Forgotten: ids,
				Report:    g.actionReporter("prune"),
				Progress:  ui.progress(),
			})
			ui.stop()
			if err != nil {
				return fmt.Errorf("--prune (dry run): %w", err)
			}
			pruneRes = &res
		}
		if g.json {
			sum := forgetSummary{MessageType: "summary", DryRun: true, WouldRemove: new(len(remove)), Prune: pruneRes}
			if len(refs) == 0 {
				sum.Kept = &kept
			}
			printJSON(g.out, sum)
		} else if !g.quiet {
			fmt.Fprintf(g.out, "dry run: would remove %d snapshot(s), keep %d; nothing was changed\n", len(remove), kept)
			switch {
			case pruneRes != nil:
				fmt.Fprintf(g.out, "prune (dry run): would free %s in %d packs, would repack %s in %d packs (%d snapshots would use %s)\n",
					formatBytes(pruneRes.BytesFreed), pruneRes.PacksDeleted, formatBytes(pruneRes.BytesRepacked), pruneRes.PacksRepacked,
					pruneRes.Snapshots, formatBytes(pruneRes.BytesUsed))
			case o.prune && missErr == nil:
				fmt.Fprintln(g.out, "prune (dry run): skipped, no snapshot would be removed")
			}
		}
		if missErr != nil {
			return fmt.Errorf("%d of %d snapshots not found; first: %w", missing, len(refs), missErr)
		}
		return nil
	}

	removed := 0
	firstErr := missErr
	for _, sn := range remove {
		if err := r.RemoveSnapshot(ctx, sn.ID); err != nil {
			if ctx.Err() != nil {
				return err
			}
			g.warn("snapshots/"+sn.ID.String(), err)
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		removed++
		if g.json {
			printJSON(g.out, forgetRemovedJSON{"removed", sn.ID.String()})
		} else if len(refs) > 0 {
			g.verbosef("removed snapshot %s", sn.ID.Short())
		}
	}
	var pruneRes *repo.PruneResult
	if o.prune && firstErr == nil && removed > 0 {
		res, err := r.Prune(ctx, repo.PruneOptions{
			MaxUnused: maxUnused,
			Report:    g.actionReporter("prune"),
			Progress:  ui.progress(),
		})
		ui.stop()
		if err != nil {
			return fmt.Errorf("%d snapshot(s) removed, but prune failed: %w", removed, err)
		}
		pruneRes = &res
	}
	if g.json {
		sum := forgetSummary{MessageType: "summary", Removed: removed, Prune: pruneRes}
		if len(refs) == 0 {
			sum.Kept = &kept
		}
		printJSON(g.out, sum)
	} else if !g.quiet {
		if len(refs) == 0 {
			fmt.Fprintf(g.out, "%d snapshot(s) removed, %d kept\n", removed, kept)
		} else {
			fmt.Fprintf(g.out, "%d snapshot(s) removed\n", removed)
		}
		switch {
		case pruneRes != nil:
			fmt.Fprintf(g.out, "prune: freed %s in %d packs, repacked %s in %d packs\n",
				formatBytes(pruneRes.BytesFreed), pruneRes.PacksDeleted, formatBytes(pruneRes.BytesRepacked), pruneRes.PacksRepacked)
		case o.prune && firstErr == nil:
			fmt.Fprintln(g.out, "prune: skipped, no snapshot was removed")
		}
	}
	if firstErr != nil {
		if o.prune {
			firstErr = fmt.Errorf("%w (prune skipped)", firstErr)
		}
		total := len(remove) + missing
		return fmt.Errorf("%d of %d snapshots not removed; first: %w", total-removed, total, firstErr)
	}
	return nil
}

// findForgetSnapshots resolves the snapshots given by id (duplicates
// once). Those not found are reported, counted in missing, and the first
// error returned as missErr: the others are still removed, and the command
// fails in the end. err is set only when the command must stop at once.
func findForgetSnapshots(ctx context.Context, g *globalOptions, r *repo.Repository, refs []string, dryRun bool) (found []*repo.Snapshot, missing int, missErr, err error) {
	seen := map[chunk.ID]bool{}
	for _, ref := range refs {
		sn, err := r.FindSnapshot(ctx, ref, repo.SnapshotFilter{})
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, nil, err
			}
			g.warn(ref, err)
			missing++
			if missErr == nil {
				missErr = err
			}
			continue
		}
		if seen[sn.ID] {
			continue
		}
		seen[sn.ID] = true
		found = append(found, sn)
		if dryRun {
			printDecision(g, repo.PolicyDecision{Snapshot: sn})
		}
	}
	return found, missing, missErr, nil
}

// applyForgetPolicy groups the snapshots that pass the filter, applies p to
// each group and prints the decisions. It returns the snapshots to remove,
// oldest first, and how many are kept.
func applyForgetPolicy(ctx context.Context, g *globalOptions, r *repo.Repository, o forgetOptions, p repo.Policy, by repo.GroupBy) ([]*repo.Snapshot, int, error) {
	broken := 0
	sns, err := r.Snapshots(ctx, func(id chunk.ID, err error) {
		broken++
		g.warn("snapshots/"+id.String(), err)
	})
	if err != nil {
		return nil, 0, err
	}
	if broken > 0 {
		// An unreadable snapshot's time and group are unknown: a policy
		// applied without it could remove what it should keep.
		return nil, 0, fmt.Errorf("%d snapshots could not be read; run 'repo check' (a policy needs every snapshot of a group)", broken)
	}
	f := o.filter()
	var selected []*repo.Snapshot
	for _, sn := range sns {
		if f.Match(sn) {
			selected = append(selected, sn)
		}
	}
	loc := time.Local
	if !g.json && !g.quiet {
		fmt.Fprintf(g.out, "policy: keep %s; grouped by %s\n", p, groupByText(by))
	}
	var remove []*repo.Snapshot
	kept := 0
	for _, grp := range repo.GroupSnapshots(selected, by) {
		keep, rm := repo.ApplyPolicy(grp.Snapshots, p, loc)
		kept += len(keep)
		if !g.json && !g.quiet {
			fmt.Fprintf(g.out, "\n%s: %d snapshot(s), keep %d, remove %d", groupText(grp, by), len(grp.Snapshots), len(keep), len(rm))
			if !p.Within.IsZero() && len(grp.Snapshots) > 0 {
				latest := grp.Snapshots[len(grp.Snapshots)-1].Time
				fmt.Fprintf(g.out, " (within %s: newer than %s)", p.Within, p.Within.Before(latest, loc).In(loc).Format(time.DateTime))
			}
			fmt.Fprintln(g.out)
		}
		// Print in time order, oldest first, as snapshots lists them.
		all := append(append([]repo.PolicyDecision{}, keep...), rm...)
		byID := map[chunk.ID]repo.PolicyDecision{}
		for _, d := range all {
			byID[d.Snapshot.ID] = d
		}
		for _, sn := range grp.Snapshots {
			d := byID[sn.ID]
			printDecision(g, d)
			if !d.Keep {
				remove = append(remove, sn)
			}
		}
	}
	if !g.json && !g.quiet {
		fmt.Fprintln(g.out)
	}
	return remove, kept, nil
}

// printDecision prints one line per snapshot: "keep 3fa2b1c4 2026-03-01
// 12:00:00 daily, monthly" or "remove 77d0e5aa 2026-02-28 12:00:00".
func printDecision(g *globalOptions, d repo.PolicyDecision) {
	sn := d.Snapshot
	action := "remove"
	if d.Keep {
		action = "keep"
	}
	if g.json {
		reasons := d.Reasons
		if reasons == nil {
			reasons = []string{} // [] rather than null: "no reason to keep it"
		}
		printJSON(g.out, forgetDecisionJSON{MessageType: "snapshot", Action: action, SnapshotID: sn.ID.String(),
			ShortID: sn.ID.Short(), Time: sn.Time, Hostname: sn.Hostname, Paths: sn.Paths, Tags: sn.Tags, Reasons: reasons})
		return
	}
	if g.quiet {
		return
	}
	line := fmt.Sprintf("%s %s %s", action, sn.ID.Short(), sn.Time.Local().Format(time.DateTime))
	if len(d.Reasons) > 0 {
		line += " " + strings.Join(d.Reasons, ", ")
	}
	fmt.Fprintln(g.out, line)
}

func groupByText(by repo.GroupBy) string {
	if s := by.String(); s != "" {
		return s
	}
	return "nothing (one group)"
}

// groupText names a group by the fields it is grouped by.
func groupText(grp repo.SnapshotGroup, by repo.GroupBy) string {
	var parts []string
	if by.Host {
		parts = append(parts, "host "+grp.Host)
	}
	if by.Paths {
		parts = append(parts, "paths "+strings.Join(grp.Paths, " "))
	}
	if by.Tags {
		t := strings.Join(grp.Tags, ",")
		if t == "" {
			t = "(none)"
		}
		parts = append(parts, "tags "+t)
	}
	if len(parts) == 0 {
		return "all snapshots"
	}
	return strings.Join(parts, ", ")
}
