package repo

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // Europe/Berlin without the system's zone files

	"repo/chunk"
)

// berlin has the daylight saving changes the tests cross: 2026-03-29
// 02:00 CET → 03:00 CEST (a 23-hour day) and 2026-10-25 03:00 CEST →
// 02:00 CET (25 hours).
func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatalf("load Europe/Berlin: %v", err)
	}
	return loc
}

// policySnap is a synthetic snapshot for policy tests: at is a wall-clock
// time in the test's zone ("2006-01-02 15:04"), or an instant with an
// explicit offset ("2006-01-02 15:04 -0700") where the wall clock is
// ambiguous. The label is at itself.
type policySnap struct {
	at   string
	host string
	tags []string
}

func parsePolicyTime(t *testing.T, s string, loc *time.Location) time.Time {
	t.Helper()
	layout := "2006-01-02 15:04"
	if len(s) > len(layout) {
		layout += " -0700"
	}
	tm, err := time.ParseInLocation(layout, s, loc)
	if err != nil {
		t.Fatalf("bad test time %q: %v", s, err)
	}
	return tm
}

// makePolicySnaps builds the snapshots (ids from their labels) and a map
// from id to label.
func makePolicySnaps(t *testing.T, ps []policySnap, loc *time.Location) ([]*Snapshot, map[chunk.ID]string) {
	t.Helper()
	labels := map[chunk.ID]string{}
	var sns []*Snapshot
	for _, p := range ps {
		id := chunk.Hash([]byte(p.at + "|" + p.host))
		if _, dup := labels[id]; dup {
			t.Fatalf("duplicate test snapshot %q", p.at)
		}
		labels[id] = p.at
		sns = append(sns, &Snapshot{ID: id, Time: parsePolicyTime(t, p.at, loc), Hostname: p.host, Tags: p.tags, Paths: []string{"/data"}})
	}
	return sns, labels
}

func TestApplyPolicy(t *testing.T) {
	type snaps = []policySnap
	tests := []struct {
		name   string
		zone   string // "" is Europe/Berlin
		snaps  snaps
		policy Policy
		// keep maps the label of every snapshot that must survive to its
		// reasons; all others must be removed. Computed by hand.
		keep map[string]string
	}{
		{
			name:   "last",
			snaps:  snaps{{at: "2026-01-01 10:00"}, {at: "2026-01-02 10:00"}, {at: "2026-01-03 10:00"}, {at: "2026-01-03 11:00"}, {at: "2026-01-04 09:00"}},
			policy: Policy{Last: 3},
			keep:   map[string]string{"2026-01-04 09:00": "last", "2026-01-03 11:00": "last", "2026-01-03 10:00": "last"},
		},
		{
			name:   "last more than there are",
			snaps:  snaps{{at: "2026-01-01 10:00"}, {at: "2026-01-02 10:00"}},
			policy: Policy{Last: 5},
			keep:   map[string]string{"2026-01-01 10:00": "last", "2026-01-02 10:00": "last"},
		},
		{
			// Days without a snapshot are not counted: daily 3 reaches
			// back over the gap to the 1st.
			name: "daily skips empty days",
			snaps: snaps{{at: "2026-01-01 08:00"}, {at: "2026-01-01 20:00"}, {at: "2026-01-05 09:00"},
				{at: "2026-01-09 07:00"}, {at: "2026-01-09 22:00"}, {at: "2025-12-31 23:00"}},
			policy: Policy{Daily: 3},
			keep:   map[string]string{"2026-01-09 22:00": "daily", "2026-01-05 09:00": "daily", "2026-01-01 20:00": "daily"},
		},
		{
			name:   "daily unlimited",
			snaps:  snaps{{at: "2026-01-01 08:00"}, {at: "2026-01-01 20:00"}, {at: "2026-01-02 09:00"}, {at: "2026-01-03 07:00"}, {at: "2026-01-03 22:00"}},
			policy: Policy{Daily: -1},
			keep:   map[string]string{"2026-01-03 22:00": "daily", "2026-01-02 09:00": "daily", "2026-01-01 20:00": "daily"},
		},
		{
			// 2026-03-29 has 23 hours in Berlin. Days are local dates:
			// 00:30 on the 30th is the 29th in UTC, 00:30 on the 28th
			// the 27th.
			name: "daily across spring forward",
			snaps: snaps{{at: "2026-03-27 22:00"}, {at: "2026-03-28 00:30"}, {at: "2026-03-28 23:30"}, {at: "2026-03-29 00:30"},
				{at: "2026-03-29 01:59"}, {at: "2026-03-29 03:01"}, {at: "2026-03-29 23:30"}, {at: "2026-03-30 00:30"}},
			policy: Policy{Daily: 3},
			keep:   map[string]string{"2026-03-30 00:30": "daily", "2026-03-29 23:30": "daily", "2026-03-28 23:30": "daily"},
		},
		{
			// One calendar day back from 2026-03-30 00:30 CEST is
			// 2026-03-29 00:30 CET: 23 hours. The snapshot exactly at the
			// cutoff is not newer than it.
			name: "within one day across spring forward",
			snaps: snaps{{at: "2026-03-27 22:00"}, {at: "2026-03-28 00:30"}, {at: "2026-03-28 23:30"}, {at: "2026-03-29 00:30"},
				{at: "2026-03-29 01:59"}, {at: "2026-03-29 03:01"}, {at: "2026-03-29 23:30"}, {at: "2026-03-30 00:30"}},
			policy: Policy{Daily: 3, Within: CalendarDuration{Days: 1}},
			keep: map[string]string{
				"2026-03-30 00:30": "daily, within 1d", "2026-03-29 23:30": "daily, within 1d",
				"2026-03-29 03:01": "within 1d", "2026-03-29 01:59": "within 1d",
				"2026-03-28 23:30": "daily",
			},
		},
		{
			// 24 hours are 24 hours: the cutoff is 2026-03-28 23:30 CET.
			name: "within 24h across spring forward",
			snaps: snaps{{at: "2026-03-27 22:00"}, {at: "2026-03-28 00:30"}, {at: "2026-03-28 23:30"}, {at: "2026-03-29 00:30"},
				{at: "2026-03-29 01:59"}, {at: "2026-03-29 03:01"}, {at: "2026-03-29 23:30"}, {at: "2026-03-30 00:30"}},
			policy: Policy{Within: CalendarDuration{Span: 24 * time.Hour}},
			keep: map[string]string{
				"2026-03-30 00:30": "within 24h", "2026-03-29 23:30": "within 24h", "2026-03-29 03:01": "within 24h",
				"2026-03-29 01:59": "within 24h", "2026-03-29 00:30": "within 24h",
			},
		},
		{
			// 2026-10-25 has 25 hours in Berlin: 02:00-03:00 comes twice.
			// Each real hour is a bucket, so the CEST and the CET 02:xx
			// are different hours.
			name: "hourly across fall back",
			snaps: snaps{{at: "2026-10-25 01:40 +0200"}, {at: "2026-10-25 02:10 +0200"}, {at: "2026-10-25 02:50 +0200"},
				{at: "2026-10-25 02:10 +0100"}, {at: "2026-10-25 02:50 +0100"}, {at: "2026-10-25 03:20 +0100"}},
			policy: Policy{Hourly: 3},
			keep:   map[string]string{"2026-10-25 03:20 +0100": "hourly", "2026-10-25 02:50 +0100": "hourly", "2026-10-25 02:50 +0200": "hourly"},
		},
		{
			// The whole 25-hour day is one daily bucket; one calendar day
			// before 23:50 CET on the 25th is 23:50 CEST on the 24th,
			// 25 hours earlier.
			name: "daily and within one day across fall back",
			snaps: snaps{{at: "2026-10-24 23:50 +0200"}, {at: "2026-10-24 23:55 +0200"}, {at: "2026-10-25 00:10 +0200"},
				{at: "2026-10-25 23:50 +0100"}},
			policy: Policy{Daily: 1, Within: CalendarDuration{Days: 1}},
			keep: map[string]string{
				"2026-10-25 23:50 +0100": "daily, within 1d", "2026-10-25 00:10 +0200": "within 1d", "2026-10-24 23:55 +0200": "within 1d",
			},
		},
		{
			name: "daily 2 across fall back",
			snaps: snaps{{at: "2026-10-24 23:50 +0200"}, {at: "2026-10-24 23:55 +0200"}, {at: "2026-10-25 00:10 +0200"},
				{at: "2026-10-25 23:50 +0100"}},
			policy: Policy{Daily: 2, Within: CalendarDuration{Span: 24 * time.Hour}},
			keep:   map[string]string{"2026-10-25 23:50 +0100": "daily, within 24h", "2026-10-24 23:55 +0200": "daily"},
		},
		{
			// Month ends, with times near midnight that fall in the other
			// month in UTC.
			name: "monthly and daily at month ends",
			snaps: snaps{{at: "2026-01-15 12:00"}, {at: "2026-01-31 23:30"}, {at: "2026-02-01 00:30"}, {at: "2026-02-28 12:00"},
				{at: "2026-02-28 23:59"}, {at: "2026-03-01 00:30"}, {at: "2026-03-01 08:00"}},
			policy: Policy{Daily: 2, Monthly: 3},
			keep:   map[string]string{"2026-03-01 08:00": "daily, monthly", "2026-02-28 23:59": "daily, monthly", "2026-01-31 23:30": "monthly"},
		},
		{
			// A month before 31 March is 28 February (not "31 February",
			// which would roll over to 3 March).
			name: "within one month from the 31st",
			snaps: snaps{{at: "2026-02-28 09:00"}, {at: "2026-02-28 10:00"}, {at: "2026-02-28 11:00"}, {at: "2026-03-01 09:00"},
				{at: "2026-03-31 10:00"}},
			policy: Policy{Within: CalendarDuration{Months: 1}},
			keep: map[string]string{
				"2026-03-31 10:00": "within 1m", "2026-03-01 09:00": "within 1m", "2026-02-28 11:00": "within 1m",
			},
		},
		{
			name:   "within one month in a leap year",
			snaps:  snaps{{at: "2024-02-28 23:00"}, {at: "2024-02-29 11:00"}, {at: "2024-02-29 13:00"}, {at: "2024-03-31 12:00"}},
			policy: Policy{Within: CalendarDuration{Months: 1}},
			keep:   map[string]string{"2024-03-31 12:00": "within 1m", "2024-02-29 13:00": "within 1m"},
		},
		{
			// A year before 29 February 2024 is 28 February 2023.
			name: "within one year from leap day",
			snaps: snaps{{at: "2023-02-27 12:00"}, {at: "2023-02-28 12:00"}, {at: "2023-02-28 18:00"}, {at: "2023-03-01 00:00"},
				{at: "2024-02-29 12:00"}},
			policy: Policy{Within: CalendarDuration{Years: 1}},
			keep: map[string]string{
				"2024-02-29 12:00": "within 1y", "2023-03-01 00:00": "within 1y", "2023-02-28 18:00": "within 1y",
			},
		},
		{
			name: "daily around leap day",
			snaps: snaps{{at: "2024-02-28 10:00"}, {at: "2024-02-28 20:00"}, {at: "2024-02-29 09:00"}, {at: "2024-02-29 23:00"},
				{at: "2024-03-01 00:10"}, {at: "2024-03-01 07:00"}},
			policy: Policy{Daily: 3},
			keep:   map[string]string{"2024-03-01 07:00": "daily", "2024-02-29 23:00": "daily", "2024-02-28 20:00": "daily"},
		},
		{
			name: "within years, months, days and hours",
			snaps: snaps{{at: "2024-11-30 09:00"}, {at: "2024-11-30 11:00"}, {at: "2025-06-01 00:00"},
				{at: "2026-02-02 12:00"}},
			// 2026-02-02 12:00 - 1y2m = 2024-12-02 12:00, - 2d =
			// 2024-11-30 12:00, - 2h = 10:00.
			policy: Policy{Within: CalendarDuration{Years: 1, Months: 2, Days: 2, Span: 2 * time.Hour}},
			keep: map[string]string{
				"2026-02-02 12:00": "within 1y2m2d2h", "2025-06-01 00:00": "within 1y2m2d2h", "2024-11-30 11:00": "within 1y2m2d2h",
			},
		},
		{
			// Years are local: 00:01 on New Year's Day is still the old
			// year in UTC.
			name: "yearly at year ends",
			snaps: snaps{{at: "2024-06-01 12:00"}, {at: "2025-12-31 23:30"}, {at: "2026-01-01 00:30"}, {at: "2026-07-01 12:00"},
				{at: "2026-12-31 23:59"}, {at: "2027-01-01 00:01"}},
			policy: Policy{Yearly: 3},
			keep:   map[string]string{"2027-01-01 00:01": "yearly", "2026-12-31 23:59": "yearly", "2025-12-31 23:30": "yearly"},
		},
		{
			// ISO weeks: 2025-12-29 (Mon) to 2026-01-04 is 2026-W01;
			// 2026-12-28 (Mon) to 2027-01-03 is 2026-W53; 2027-01-04 starts
			// 2027-W01. 2026-01-05 00:30 is a Monday locally (W02) but a
			// Sunday in UTC.
			name: "weekly across ISO week 53 and week 1",
			snaps: snaps{{at: "2025-12-28 12:00"}, {at: "2025-12-29 12:00"}, {at: "2026-01-01 12:00"}, {at: "2026-01-04 12:00"},
				{at: "2026-01-05 00:30"}, {at: "2026-12-27 12:00"}, {at: "2026-12-28 12:00"}, {at: "2027-01-02 12:00"},
				{at: "2027-01-03 12:00"}, {at: "2027-01-04 12:00"}},
			policy: Policy{Weekly: 5},
			keep: map[string]string{
				"2027-01-04 12:00": "weekly", "2027-01-03 12:00": "weekly", "2026-12-27 12:00": "weekly",
				"2026-01-05 00:30": "weekly", "2026-01-04 12:00": "weekly",
			},
		},
		{
			name: "weekly and yearly unlimited",
			snaps: snaps{{at: "2025-12-28 12:00"}, {at: "2025-12-29 12:00"}, {at: "2026-01-01 12:00"}, {at: "2026-01-04 12:00"},
				{at: "2026-01-05 00:30"}},
			policy: Policy{Weekly: -1, Yearly: -1},
			keep: map[string]string{
				"2026-01-05 00:30": "weekly, yearly", "2026-01-04 12:00": "weekly",
				"2025-12-29 12:00": "yearly", "2025-12-28 12:00": "weekly",
			},
		},
		{
			name: "combined rules",
			snaps: snaps{{at: "2026-01-05 10:00"}, {at: "2026-01-07 10:00", tags: []string{"keep", "x"}}, {at: "2026-01-08 10:00"},
				{at: "2026-01-12 10:00"}, {at: "2026-01-13 09:00", tags: []string{"x"}}, {at: "2026-01-13 18:00"},
				{at: "2026-01-14 08:00"}, {at: "2026-01-14 09:00", tags: []string{"other"}}},
			policy: Policy{Last: 2, Daily: 3, Weekly: 2, Tags: []string{"keep", "other", "keep"}},
			keep: map[string]string{
				"2026-01-14 09:00": "last, daily, weekly, tag other", "2026-01-14 08:00": "last", "2026-01-13 18:00": "daily",
				"2026-01-12 10:00": "daily", "2026-01-08 10:00": "weekly", "2026-01-07 10:00": "tag keep",
			},
		},
		{
			name:   "tag only",
			snaps:  snaps{{at: "2026-01-05 10:00", tags: []string{"a"}}, {at: "2026-01-06 10:00", tags: []string{"b", "a"}}, {at: "2026-01-07 10:00"}},
			policy: Policy{Tags: []string{"a", "b"}},
			keep:   map[string]string{"2026-01-06 10:00": "tag a, tag b", "2026-01-05 10:00": "tag a"},
		},
		{
			name:   "hourly in UTC",
			zone:   "UTC",
			snaps:  snaps{{at: "2026-05-01 10:05"}, {at: "2026-05-01 10:55"}, {at: "2026-05-01 11:00"}, {at: "2026-05-01 13:59"}, {at: "2026-05-01 14:00"}},
			policy: Policy{Hourly: 3},
			keep:   map[string]string{"2026-05-01 14:00": "hourly", "2026-05-01 13:59": "hourly", "2026-05-01 11:00": "hourly"},
		},
		{
			// Hours are local hours in a zone with a half-hour offset.
			name:   "hourly in India",
			zone:   "Asia/Kolkata",
			snaps:  snaps{{at: "2026-05-01 10:05"}, {at: "2026-05-01 10:35"}, {at: "2026-05-01 10:55"}, {at: "2026-05-01 11:10"}},
			policy: Policy{Hourly: 2},
			keep:   map[string]string{"2026-05-01 11:10": "hourly", "2026-05-01 10:55": "hourly"},
		},
		{
			name:   "empty policy removes all",
			snaps:  snaps{{at: "2026-01-05 10:00"}, {at: "2026-01-06 10:00"}},
			policy: Policy{},
			keep:   map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loc := berlin(t)
			if tt.zone != "" {
				var err error
				if loc, err = time.LoadLocation(tt.zone); err != nil {
					t.Fatal(err)
				}
			}
			sns, labels := makePolicySnaps(t, tt.snaps, loc)
			// The input order must not matter.
			slices.Reverse(sns[len(sns)/2:])
			in := slices.Clone(sns)
			keep, remove := ApplyPolicy(sns, tt.policy, loc)
			if !slices.Equal(in, sns) {
				t.Errorf("ApplyPolicy reordered its input")
			}
			if len(keep)+len(remove) != len(sns) {
				t.Fatalf("%d kept + %d removed, want %d in all", len(keep), len(remove), len(sns))
			}
			got := map[string]string{}
			for _, d := range keep {
				if !d.Keep {
					t.Errorf("%s in keep with Keep false", labels[d.Snapshot.ID])
				}
				got[labels[d.Snapshot.ID]] = strings.Join(d.Reasons, ", ")
			}
			for _, d := range remove {
				if d.Keep || len(d.Reasons) > 0 {
					t.Errorf("%s in remove with Keep %v, reasons %v", labels[d.Snapshot.ID], d.Keep, d.Reasons)
				}
			}
			for _, l := range sortedLabels(got, tt.keep) {
				g, gok := got[l]
				w, wok := tt.keep[l]
				switch {
				case gok && !wok:
					t.Errorf("kept %s (%s), want it removed", l, g)
				case !gok && wok:
					t.Errorf("removed %s, want it kept (%s)", l, w)
				case g != w:
					t.Errorf("kept %s for %q, want %q", l, g, w)
				}
			}
			checkNewestFirst(t, "keep", keep)
			checkNewestFirst(t, "remove", remove)
		})
	}
}

func sortedLabels(a, b map[string]string) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func checkNewestFirst(t *testing.T, what string, ds []PolicyDecision) {
	t.Helper()
	for i := 1; i < len(ds); i++ {
		if ds[i].Snapshot.Time.After(ds[i-1].Snapshot.Time) {
			t.Errorf("%s list is not newest first at %d", what, i)
		}
	}
}

// TestApplyPolicyTies: snapshots of the same instant are ordered by id, so
// keep-last picks the same one on every run.
func TestApplyPolicyTies(t *testing.T) {
	at := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var sns []*Snapshot
	for i := range 4 {
		sns = append(sns, &Snapshot{ID: chunk.Hash(fmt.Appendf(nil, "tie %d", i)), Time: at})
	}
	want := slices.Clone(sns)
	slices.SortFunc(want, func(a, b *Snapshot) int { return b.ID.Compare(a.ID) })
	for range 3 {
		slices.Reverse(sns)
		keep, _ := ApplyPolicy(sns, Policy{Last: 2}, time.UTC)
		if len(keep) != 2 || keep[0].Snapshot != want[0] || keep[1].Snapshot != want[1] {
			t.Fatalf("keep-last 2 of equal times kept %v, want the two highest ids", keep)
		}
	}
}

func TestPolicyCalendarDurationBefore(t *testing.T) {
	loc := berlin(t)
	tests := []struct {
		from, want string // wall clock in Berlin
		d          CalendarDuration
	}{
		{"2026-03-31 10:00", "2026-02-28 10:00", CalendarDuration{Months: 1}},
		{"2026-03-31 10:00", "2026-02-27 10:00", CalendarDuration{Months: 1, Days: 1}},
		{"2026-05-31 10:00", "2026-02-28 10:00", CalendarDuration{Months: 3}},
		{"2024-03-31 10:00", "2024-02-29 10:00", CalendarDuration{Months: 1}},
		{"2024-02-29 10:00", "2023-02-28 10:00", CalendarDuration{Years: 1}},
		{"2024-02-29 10:00", "2020-02-29 10:00", CalendarDuration{Years: 4}},
		{"2026-01-15 10:00", "2024-12-15 10:00", CalendarDuration{Years: 1, Months: 1}},
		{"2026-01-15 10:00", "2024-12-15 10:00", CalendarDuration{Months: 13}},
		{"2026-03-01 10:00", "2026-02-28 10:00", CalendarDuration{Days: 1}},
		{"2026-03-30 00:30", "2026-03-29 00:30", CalendarDuration{Days: 1}},
		{"2026-03-30 00:30", "2026-03-28 23:30", CalendarDuration{Span: 24 * time.Hour}},
		{"2026-10-26 01:00", "2026-10-25 01:00", CalendarDuration{Days: 1}},
		{"2027-01-01 00:00", "2026-12-31 00:00", CalendarDuration{Days: 1}},
		{"2026-01-01 05:00", "2025-12-31 23:00", CalendarDuration{Span: 6 * time.Hour}},
	}
	for _, tt := range tests {
		from, want := parsePolicyTime(t, tt.from, loc), parsePolicyTime(t, tt.want, loc)
		if got := tt.d.Before(from, loc); !got.Equal(want) {
			t.Errorf("%s before %s = %s, want %s", tt.d, tt.from, got.In(loc), want)
		}
	}
	// Real hours: 1d before 2026-03-30 00:30 CEST is 23 hours, before
	// 2026-10-26 01:00 CET 25 hours.
	if got := (CalendarDuration{Days: 1}).Before(parsePolicyTime(t, "2026-03-30 00:30", loc), loc); parsePolicyTime(t, "2026-03-30 00:30", loc).Sub(got) != 23*time.Hour {
		t.Errorf("one day before the spring-forward day is not 23 hours")
	}
	if got := (CalendarDuration{Days: 1}).Before(parsePolicyTime(t, "2026-10-26 01:00", loc), loc); parsePolicyTime(t, "2026-10-26 01:00", loc).Sub(got) != 25*time.Hour {
		t.Errorf("one day before the fall-back day is not 25 hours")
	}
}

func TestPolicyParseCalendarDuration(t *testing.T) {
	tests := []struct {
		in   string
		want CalendarDuration
		str  string
	}{
		{"1y2m3d4h", CalendarDuration{Years: 1, Months: 2, Days: 3, Span: 4 * time.Hour}, "1y2m3d4h"},
		{"4h3d2m1y", CalendarDuration{Years: 1, Months: 2, Days: 3, Span: 4 * time.Hour}, "1y2m3d4h"},
		{"2m", CalendarDuration{Months: 2}, "2m"}, // months, as in restic
		{"14d", CalendarDuration{Days: 14}, "14d"},
		{"36h", CalendarDuration{Span: 36 * time.Hour}, "36h"},
		{"1h30m", CalendarDuration{Months: 30, Span: time.Hour}, "30m1h"},
		{"90m0s", CalendarDuration{Span: 90 * time.Minute}, "1h30m0s"},
		{"1.5h", CalendarDuration{Span: 90 * time.Minute}, "1h30m0s"},
		{"45s", CalendarDuration{Span: 45 * time.Second}, "45s"},
		{"0d", CalendarDuration{}, "0h"},
	}
	for _, tt := range tests {
		got, err := ParseCalendarDuration(tt.in)
		if err != nil {
			t.Errorf("parse %q: %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("parse %q = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("%q renders as %q, want %q", tt.in, s, tt.str)
		}
	}
	for _, bad := range []string{"", "1w", "-1h", "-5d", "1d1d", "y", "1y 2m", "99999999999999999999d", "2000000y", "abc"} {
		if d, err := ParseCalendarDuration(bad); err == nil {
			t.Errorf("parse %q = %+v, want an error", bad, d)
		}
	}
}

func TestPolicyGroupSnapshots(t *testing.T) {
	// Listed oldest first: a1 is the oldest, b22 the newest.
	mk := func(i int, label, host string, paths, tags []string) *Snapshot {
		return &Snapshot{ID: chunk.Hash([]byte(label)), Hostname: host, Paths: paths, Tags: tags,
			Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	sns := []*Snapshot{
		mk(1, "a1", "a", []string{"/x", "/y"}, nil),
		mk(2, "a2", "a", []string{"/y", "/x"}, []string{"t"}), // same paths, other order
		mk(3, "a3", "a", []string{"/x"}, []string{"t"}),
		mk(4, "b1", "b", []string{"/x", "/y"}, []string{"u", "t"}),
		mk(5, "b22", "b", []string{"/x", "/y"}, []string{"t", "u"}),
	}
	slices.Reverse(sns) // the input order must not matter
	names := func(sg SnapshotGroup) string {
		var l []string
		for _, sn := range sg.Snapshots {
			for _, c := range []string{"a1", "a2", "a3", "b1", "b22"} {
				if sn.ID == chunk.Hash([]byte(c)) {
					l = append(l, c)
				}
			}
		}
		return fmt.Sprintf("%s|%s|%s:%s", sg.Host, strings.Join(sg.Paths, " "), strings.Join(sg.Tags, " "), strings.Join(l, ","))
	}
	tests := []struct {
		by   string
		want []string
	}{
		{"host,paths", []string{"a|/x|:a3", "a|/x /y|:a1,a2", "b|/x /y|:b1,b22"}},
		{"host", []string{"a||:a1,a2,a3", "b||:b1,b22"}},
		{"paths", []string{"|/x|:a3", "|/x /y|:a1,a2,b1,b22"}},
		{"tags", []string{"||:a1", "||t:a2,a3", "||t u:b1,b22"}},
		{"host,tags", []string{"a||:a1", "a||t:a2,a3", "b||t u:b1,b22"}},
		{"", []string{"||:a1,a2,a3,b1,b22"}},
		{" paths , host ", []string{"a|/x|:a3", "a|/x /y|:a1,a2", "b|/x /y|:b1,b22"}},
	}
	for _, tt := range tests {
		by, err := ParseGroupBy(tt.by)
		if err != nil {
			t.Fatalf("parse %q: %v", tt.by, err)
		}
		var got []string
		for _, g := range GroupSnapshots(sns, by) {
			got = append(got, names(g))
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("group by %q:\n got %q\nwant %q", tt.by, got, tt.want)
		}
	}
	for _, bad := range []string{"hosts", "host,,paths", "time"} {
		if _, err := ParseGroupBy(bad); err == nil {
			t.Errorf("ParseGroupBy(%q) accepted", bad)
		}
	}
	if DefaultGroupBy.String() != "host,paths" {
		t.Errorf("default group by renders as %q", DefaultGroupBy.String())
	}

	// A policy applies per group: keep-last 1 keeps the newest of each.
	var kept []string
	for _, g := range GroupSnapshots(sns, DefaultGroupBy) {
		keep, _ := ApplyPolicy(g.Snapshots, Policy{Last: 1}, time.UTC)
		for _, d := range keep {
			for _, c := range []string{"a1", "a2", "a3", "b1", "b22"} {
				if d.Snapshot.ID == chunk.Hash([]byte(c)) {
					kept = append(kept, c)
				}
			}
		}
	}
	if want := []string{"a3", "a2", "b22"}; !slices.Equal(kept, want) {
		t.Errorf("keep-last 1 per host and paths kept %v, want %v", kept, want)
	}
}
