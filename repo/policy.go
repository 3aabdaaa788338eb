package repo

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Policy says which snapshots of one group forget keeps (see ApplyPolicy
// and docs/retention.md). A snapshot is kept when any rule keeps it.
type Policy struct {
	// Last keeps the Last newest snapshots. Zero: off; negative: all.
	Last int
	// Hourly, Daily, Weekly (ISO 8601 weeks), Monthly and Yearly each keep
	// the newest snapshot of each of the last N hours, days, weeks, months
	// or years that have a snapshot; periods without one are skipped, not
	// counted. Zero: the rule is off; negative: every such period.
	Hourly, Daily, Weekly, Monthly, Yearly int
	// Within keeps every snapshot newer than the group's latest snapshot
	// minus Within (see CalendarDuration.Before). Zero: off.
	Within CalendarDuration
	// Tags keeps every snapshot that has any of these tags.
	Tags []string
}

// Empty reports whether p has no rule at all; applying it would remove
// every snapshot, so forget refuses it.
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 &&
		p.Monthly == 0 && p.Yearly == 0 && p.Within.IsZero() && len(p.Tags) == 0
}

// String describes p for humans, e.g. "last 3, daily 7, within 1y2m, tag keep".
func (p Policy) String() string {
	var parts []string
	count := func(name string, n int) {
		switch {
		case n < 0:
			parts = append(parts, "all "+name)
		case n > 0:
			parts = append(parts, fmt.Sprintf("%s %d", name, n))
		}
	}
	count(ReasonLast, p.Last)
	count(ReasonHourly, p.Hourly)
	count(ReasonDaily, p.Daily)
	count(ReasonWeekly, p.Weekly)
	count(ReasonMonthly, p.Monthly)
	count(ReasonYearly, p.Yearly)
	if !p.Within.IsZero() {
		parts = append(parts, "within "+p.Within.String())
	}
	for _, t := range p.Tags {
		parts = append(parts, "tag "+t)
	}
	if len(parts) == 0 {
		return "nothing"
	}
	return strings.Join(parts, ", ")
}

// Reasons a policy keeps a snapshot (PolicyDecision.Reasons). Within and
// tag reasons are "within " + the duration and "tag " + the tag.
const (
	ReasonLast    = "last"
	ReasonHourly  = "hourly"
	ReasonDaily   = "daily"
	ReasonWeekly  = "weekly"
	ReasonMonthly = "monthly"
	ReasonYearly  = "yearly"
)

// PolicyDecision is what a policy does with one snapshot.
type PolicyDecision struct {
	Snapshot *Snapshot
	Keep     bool
	// Reasons names every rule that keeps the snapshot, in the order
	// last, hourly, daily, weekly, monthly, yearly, within, tags; empty
	// when it is removed.
	Reasons []string
}

// bucketRule is one of the calendar rules: it keeps the newest snapshot of
// each of the first n distinct buckets met going back in time.
type bucketRule struct {
	reason string
	n      int
	key    func(t time.Time) int64 // t is in the policy's location
}

// ApplyPolicy decides which of sns (one group; any order) p keeps. Calendar
// periods (hours, days, ISO weeks, months, years) and Within are counted in
// loc, normally time.Local: a day is a calendar day there, 23 or 25 hours
// long on the days daylight saving time starts or ends. Hours are real
// hours: the hour repeated when the clocks go back is two buckets.
//
// keep and remove are newest first; sns is not modified. It is a pure
// function of its arguments, so a dry run shows exactly what a real run
// does.
func ApplyPolicy(sns []*Snapshot, p Policy, loc *time.Location) (keep, remove []PolicyDecision) {
	if loc == nil {
		loc = time.Local
	}
	sorted := slices.Clone(sns)
	slices.SortFunc(sorted, func(a, b *Snapshot) int {
		if c := b.Time.Compare(a.Time); c != 0 {
			return c
		}
		return strings.Compare(b.ID.String(), a.ID.String())
	})
	rules := []bucketRule{
		{ReasonHourly, p.Hourly, hourBucket},
		{ReasonDaily, p.Daily, func(t time.Time) int64 {
			y, m, d := t.Date()
			return int64(y)*10000 + int64(m)*100 + int64(d)
		}},
		{ReasonWeekly, p.Weekly, func(t time.Time) int64 {
			y, w := t.ISOWeek()
			return int64(y)*100 + int64(w)
		}},
		{ReasonMonthly, p.Monthly, func(t time.Time) int64 { return int64(t.Year())*100 + int64(t.Month()) }},
		{ReasonYearly, p.Yearly, func(t time.Time) int64 { return int64(t.Year()) }},
	}
	// seen[i] holds the buckets rule i has kept a snapshot of. A set, not
	// "the last bucket": where a zone's offset drops across midnight a
	// local date recurs after a later one, and must not count twice.
	seen := make([]map[int64]bool, len(rules))
	for i := range seen {
		seen[i] = map[int64]bool{}
	}
	var cutoff time.Time
	if !p.Within.IsZero() && len(sorted) > 0 {
		cutoff = p.Within.Before(sorted[0].Time, loc)
	}
	var tags []string
	for _, t := range p.Tags {
		if !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	for i, sn := range sorted {
		var reasons []string
		if p.Last < 0 || i < p.Last {
			reasons = append(reasons, ReasonLast)
		}
		lt := sn.Time.In(loc)
		for j, r := range rules {
			if r.n == 0 {
				continue
			}
			k := r.key(lt)
			if seen[j][k] || (r.n > 0 && len(seen[j]) >= r.n) {
				continue
			}
			seen[j][k] = true
			reasons = append(reasons, r.reason)
		}
		if !p.Within.IsZero() && sn.Time.After(cutoff) {
			reasons = append(reasons, "within "+p.Within.String())
		}
		for _, t := range tags {
			if slices.Contains(sn.Tags, t) {
				reasons = append(reasons, "tag "+t)
			}
		}
		d := PolicyDecision{Snapshot: sn, Keep: len(reasons) > 0, Reasons: reasons}
		if d.Keep {
			keep = append(keep, d)
		} else {
			remove = append(remove, d)
		}
	}
	return keep, remove
}

// hourBucket is the instant (Unix seconds) at which t's local hour began:
// distinct for the two 02:00 hours of the night the clocks go back, and
// aligned to the local hour in zones with half-hour offsets.
func hourBucket(t time.Time) int64 {
	return t.Unix() - int64(t.Minute())*60 - int64(t.Second())
}

// CalendarDuration is a length of time for Policy.Within: years, months
// and days on the calendar, plus a fixed Span (hours and below).
type CalendarDuration struct {
	Years, Months, Days int
	Span                time.Duration
}

// IsZero reports whether d is no time at all.
func (d CalendarDuration) IsZero() bool {
	return d.Years == 0 && d.Months == 0 && d.Days == 0 && d.Span == 0
}

// String renders d as ParseCalendarDuration reads it, e.g. "1y2m3d4h".
func (d CalendarDuration) String() string {
	var b strings.Builder
	for _, u := range []struct {
		n    int
		unit string
	}{{d.Years, "y"}, {d.Months, "m"}, {d.Days, "d"}} {
		if u.n != 0 {
			fmt.Fprintf(&b, "%d%s", u.n, u.unit)
		}
	}
	switch {
	case d.Span == 0 && b.Len() == 0:
		return "0h"
	case d.Span == 0:
	case d.Span%time.Hour == 0:
		fmt.Fprintf(&b, "%dh", d.Span/time.Hour)
	default:
		b.WriteString(d.Span.String())
	}
	return b.String()
}

// Before returns the instant d before t, counted on the calendar of loc:
// first years and months back to the same day of the month, or the
// month's last day when it is shorter (a month before 31 March is 28 or
// 29 February, a year before 29 February is 28 February), then days back
// to the same wall-clock time (a day across a daylight saving change is 23
// or 25 hours), then Span.
func (d CalendarDuration) Before(t time.Time, loc *time.Location) time.Time {
	lt := t.In(loc)
	y, m, day := lt.Date()
	months := y*12 + int(m) - 1 - d.Years*12 - d.Months
	ty, tm := floorDiv(months, 12), time.Month(months-floorDiv(months, 12)*12+1)
	day = min(day, daysIn(ty, tm))
	c := time.Date(ty, tm, day-d.Days, lt.Hour(), lt.Minute(), lt.Second(), lt.Nanosecond(), loc)
	return c.Add(-d.Span)
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// daysIn is the number of days of month m of year y.
func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}

// calendarRE matches restic-style durations: numbers with the units y, m
// (months), d and h, e.g. "1y2m3d4h".
var calendarRE = regexp.MustCompile(`^(?:[0-9]+[ymdh])+$`)

// maxCalendarCount bounds each number of a duration, far beyond any
// retention period but small enough that no arithmetic overflows.
const maxCalendarCount = 1_000_000

// ParseCalendarDuration reads a duration for --keep-within: restic's form
// (numbers with y for years, m for MONTHS, d for days, h for hours, in any
// order, e.g. "1y6m", "14d", "36h"), or failing that a Go duration
// ("1.5h", "90m0s", "45s"). Note that "30m" is thirty months, as in restic;
// minutes need the Go form with seconds ("30m0s"). Negative durations are
// refused.
func ParseCalendarDuration(s string) (CalendarDuration, error) {
	var d CalendarDuration
	if calendarRE.MatchString(s) {
		seen := map[byte]bool{}
		rest := s
		for rest != "" {
			i := strings.IndexAny(rest, "ymdh")
			n, err := strconv.Atoi(rest[:i])
			if err != nil || n > maxCalendarCount {
				return CalendarDuration{}, fmt.Errorf("duration %q: %q is too large", s, rest[:i])
			}
			unit := rest[i]
			if seen[unit] {
				return CalendarDuration{}, fmt.Errorf("duration %q: unit %q given twice", s, unit)
			}
			seen[unit] = true
			switch unit {
			case 'y':
				d.Years = n
			case 'm':
				d.Months = n
			case 'd':
				d.Days = n
			case 'h':
				d.Span = time.Duration(n) * time.Hour
			}
			rest = rest[i+1:]
		}
		return d, nil
	}
	span, err := time.ParseDuration(s)
	if err != nil {
		return CalendarDuration{}, fmt.Errorf("duration %q: want e.g. 1y6m, 14d, 36h (y years, m months, d days, h hours) or a Go duration such as 90m0s", s)
	}
	if span < 0 {
		return CalendarDuration{}, fmt.Errorf("duration %q is negative", s)
	}
	d.Span = span
	return d, nil
}

// GroupBy says which snapshot fields split the snapshots into groups that
// a policy is applied to separately. The zero value makes one group.
type GroupBy struct {
	Host, Paths, Tags bool
}

// DefaultGroupBy groups by host and paths, so each backup job keeps its own
// history.
var DefaultGroupBy = GroupBy{Host: true, Paths: true}

// ParseGroupBy reads a comma-separated list of host, paths and tags; the
// empty string puts all snapshots in one group.
func ParseGroupBy(s string) (GroupBy, error) {
	var g GroupBy
	if strings.TrimSpace(s) == "" {
		return g, nil
	}
	for _, f := range strings.Split(s, ",") {
		switch strings.TrimSpace(f) {
		case "host":
			g.Host = true
		case "paths":
			g.Paths = true
		case "tags":
			g.Tags = true
		default:
			return GroupBy{}, fmt.Errorf("group by %q: want a comma-separated list of host, paths and tags, or an empty string", f)
		}
	}
	return g, nil
}

// String renders g as ParseGroupBy reads it.
func (g GroupBy) String() string {
	var f []string
	if g.Host {
		f = append(f, "host")
	}
	if g.Paths {
		f = append(f, "paths")
	}
	if g.Tags {
		f = append(f, "tags")
	}
	return strings.Join(f, ",")
}

// SnapshotGroup is the snapshots that share the grouped fields.
type SnapshotGroup struct {
	// Host, Paths and Tags are the group's values of the fields grouped
	// by (Paths and Tags sorted); the others are empty.
	Host  string
	Paths []string
	Tags  []string
	// Snapshots are the group's snapshots, oldest first.
	Snapshots []*Snapshot
}

// GroupSnapshots splits sns into groups by the fields g names. Paths and
// tags are compared as sets. Groups are sorted by host, paths and tags.
func GroupSnapshots(sns []*Snapshot, g GroupBy) []SnapshotGroup {
	byKey := map[string]int{}
	var groups []SnapshotGroup
	for _, sn := range sns {
		var sg SnapshotGroup
		if g.Host {
			sg.Host = sn.Hostname
		}
		if g.Paths {
			sg.Paths = slices.Sorted(slices.Values(sn.Paths))
		}
		if g.Tags {
			sg.Tags = slices.Compact(slices.Sorted(slices.Values(sn.Tags)))
		}
		// Quoting separates the fields unambiguously whatever bytes they
		// hold (paths need not be UTF-8).
		k := fmt.Sprintf("%q %q %q", sg.Host, sg.Paths, sg.Tags)
		i, ok := byKey[k]
		if !ok {
			i = len(groups)
			byKey[k] = i
			groups = append(groups, sg)
		}
		groups[i].Snapshots = append(groups[i].Snapshots, sn)
	}
	slices.SortFunc(groups, func(a, b SnapshotGroup) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		if c := slices.Compare(a.Paths, b.Paths); c != 0 {
			return c
		}
		return slices.Compare(a.Tags, b.Tags)
	})
	for i := range groups {
		SortSnapshots(groups[i].Snapshots)
	}
	return groups
}
