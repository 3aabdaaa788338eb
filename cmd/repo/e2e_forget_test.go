package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// forgetSnap is a snapshot made for the forget tests.
type forgetSnap struct {
	at   string // --time, in UTC (the tests run with TZ=UTC)
	host string
	tag  string
	id   string // filled in
}

// forgetRepo makes a repository with TZ=UTC (so days are UTC days) and the
// given snapshots, each of different stdin data; it fills in their ids.
func forgetRepo(t *testing.T, snaps []*forgetSnap) *testRepo {
	t.Helper()
	r := newRepo(t)
	r.env = append(r.env, "TZ=UTC")
	for i, s := range snaps {
		args := []string{"backup", "--json", "--stdin", "--stdin-filename", "db.sql", "--time", s.at, "--host", s.host}
		if s.tag != "" {
			args = append(args, "--tag", s.tag)
		}
		out := mustRunBin(t, r.env, strings.NewReader(fmt.Sprintf("dump %d %s\n%s", i, s.at, randomBytes(uint64(i), 50_000))), args...)
		s.id = lastSummary[backupSummary](t, out).SnapshotID
	}
	return r
}

// snapshotTimes lists the snapshots as "host time" in time order.
func snapshotTimes(t *testing.T, r *testRepo) []string {
	t.Helper()
	var out []string
	for _, line := range jsonLines(t, r.mustRun("snapshots", "--json")) {
		if line["message_type"] != "snapshot" {
			continue
		}
		var sn struct {
			Time     time.Time `json:"time"`
			Hostname string    `json:"hostname"`
		}
		decodeLine(t, line, &sn)
		out = append(out, sn.Hostname+" "+sn.Time.UTC().Format(time.DateTime))
	}
	return out
}

// TestE2EForgetPolicy: a policy's dry run lists every snapshot with its
// fate and reasons and changes nothing; the real run leaves exactly the
// snapshots it listed as kept; filters limit it to some snapshots; --prune
// removes the data; ids and policies do not mix; an empty policy is
// refused.
func TestE2EForgetPolicy(t *testing.T) {
	t.Parallel()
	snaps := []*forgetSnap{
		{at: "2026-01-01 10:00:00", host: "alpha", tag: "release"},
		{at: "2026-01-01 18:00:00", host: "alpha"},
		{at: "2026-01-02 09:00:00", host: "alpha"},
		{at: "2026-01-03 09:00:00", host: "alpha"},
		{at: "2026-01-05 12:00:00", host: "alpha"},
		{at: "2026-01-05 20:00:00", host: "alpha"},
		{at: "2026-01-04 08:00:00", host: "beta"},
		{at: "2026-01-04 09:00:00", host: "beta"},
	}
	r := forgetRepo(t, snaps)
	all := snapshotTimes(t, r)
	if len(all) != len(snaps) {
		t.Fatalf("made %d snapshots, listed %v", len(snaps), all)
	}
	short := func(s *forgetSnap) string { return s.id[:8] }

	// Usage errors, exit 2, nothing removed.
	for _, args := range [][]string{
		{"forget"},
		{"forget", snaps[0].id, "--keep-last", "1"},
		{"forget", snaps[0].id, "--host", "alpha"},
		{"forget", "--keep-daily", "0"},
		{"forget", "--keep-within", "0d"},
		{"forget", "--keep-within", "2 weeks"},
		{"forget", "--keep-daily", "-2"},
		{"forget", "--keep-last", "1", "--group-by", "host,time"},
		{"forget", "--keep-last", "1", "--max-unused", "10%"},
		{"forget", "--keep-last", "1", "--prune", "--max-unused", "lots"},
	} {
		stdout, stderr, code := r.run(nil, args...)
		if code != 2 {
			t.Errorf("repo %s: exit %d, want 2 (usage)\nstdout: %s\nstderr: %s", quoteArgs(args), code, stdout, stderr)
		}
	}
	if got := snapshotTimes(t, r); !slices.Equal(got, all) {
		t.Fatalf("usage errors changed the snapshots: %v", got)
	}

	// Per host and paths: alpha keeps daily 2 (5th 20:00, 3rd) and the
	// release-tagged one; beta's one day keeps its newest.
	policy := []string{"forget", "--keep-daily", "2", "--keep-tag", "release"}
	wantFate := map[string]string{ // id → reasons, "" for removed
		snaps[0].id: "tag release",
		snaps[1].id: "",
		snaps[2].id: "",
		snaps[3].id: "daily",
		snaps[4].id: "",
		snaps[5].id: "daily",
		snaps[6].id: "",
		snaps[7].id: "daily",
	}

	out := r.mustRun(append(policy, "--dry-run", "--json")...)
	got := map[string]string{}
	for _, line := range jsonLines(t, out) {
		switch line["message_type"] {
		case "snapshot":
			var d struct {
				Action     string   `json:"action"`
				SnapshotID string   `json:"snapshot_id"`
				Reasons    []string `json:"reasons"`
			}
			decodeLine(t, line, &d)
			if (d.Action == "keep") != (len(d.Reasons) > 0) {
				t.Errorf("dry run: %s %s with reasons %q", d.Action, d.SnapshotID[:8], d.Reasons)
			}
			got[d.SnapshotID] = strings.Join(d.Reasons, ", ")
		case "removed":
			t.Errorf("dry run removed a snapshot: %v", line)
		}
	}
	for id, want := range wantFate {
		if g, ok := got[id]; !ok || g != want {
			t.Errorf("dry run: snapshot %s: reasons %q (listed %v), want %q", id[:8], g, ok, want)
		}
	}
	if len(got) != len(wantFate) {
		t.Errorf("dry run listed %d snapshots, want %d", len(got), len(wantFate))
	}
	sum := lastSummary[struct {
		DryRun      bool `json:"dry_run"`
		Removed     int  `json:"removed"`
		WouldRemove int  `json:"would_remove"`
		Kept        int  `json:"kept"`
	}](t, out)
	if !sum.DryRun || sum.Removed != 0 || sum.WouldRemove != 4 || sum.Kept != 4 {
		t.Errorf("dry run summary %+v, want dry run, 0 removed, 4 would be removed, 4 kept", sum)
	}

	text := r.mustRun(append(policy, "--dry-run")...)
	for _, want := range []string{
		"keep " + short(snaps[5]) + " 2026-01-05 20:00:00 daily\n",
		"remove " + short(snaps[4]) + " 2026-01-05 12:00:00\n",
		"keep " + short(snaps[0]) + " 2026-01-01 10:00:00 tag release\n",
		"host alpha, paths /db.sql: 6 snapshot(s), keep 3, remove 3\n",
		"host beta, paths /db.sql: 2 snapshot(s), keep 1, remove 1\n",
		"dry run: would remove 4 snapshot(s), keep 4; nothing was changed\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("dry run output lacks %q:\n%s", want, text)
		}
	}
	if got := snapshotTimes(t, r); !slices.Equal(got, all) {
		t.Fatalf("dry runs changed the snapshots: %v", got)
	}

	// A filter limits the policy to beta; alpha is untouched.
	out = r.mustRun("forget", "--host", "beta", "--keep-last", "1", "--json")
	var removed []string
	for _, line := range jsonLines(t, out) {
		if line["message_type"] == "removed" {
			removed = append(removed, line["snapshot_id"].(string))
		}
	}
	if !slices.Equal(removed, []string{snaps[6].id}) {
		t.Errorf("forget --host beta --keep-last 1 removed %q, want only %s", removed, snaps[6].id[:8])
	}

	// The real run leaves what the dry run said it keeps.
	text = r.mustRun(policy...)
	if !strings.Contains(text, "3 snapshot(s) removed, 4 kept\n") {
		t.Errorf("forget output lacks its summary:\n%s", text)
	}
	want := []string{"alpha 2026-01-01 10:00:00", "alpha 2026-01-03 09:00:00", "beta 2026-01-04 09:00:00", "alpha 2026-01-05 20:00:00"}
	if got := snapshotTimes(t, r); !slices.Equal(got, want) {
		t.Errorf("after forget: snapshots %q, want %q", got, want)
	}
	r.mustRun("check")

	// Applying the same policy again removes nothing.
	if text := r.mustRun(policy...); !strings.Contains(text, "0 snapshot(s) removed, 4 kept\n") {
		t.Errorf("second forget with the same policy:\n%s", text)
	}

	// One group for all, keep the newest, and prune: the data of the
	// others goes.
	out = r.mustRun("forget", "--group-by", "", "--keep-last", "1", "--prune", "--max-unused", "0%", "--json")
	psum := lastSummary[struct {
		Removed int `json:"removed"`
		Prune   *struct {
			PacksDeleted  int `json:"packs_deleted"`
			PacksRepacked int `json:"packs_repacked"`
			Snapshots     int `json:"snapshots"`
		} `json:"prune"`
	}](t, out)
	if psum.Removed != 3 || psum.Prune == nil || psum.Prune.Snapshots != 1 || psum.Prune.PacksDeleted+psum.Prune.PacksRepacked == 0 {
		t.Errorf("forget --prune summary %+v (prune %+v), want 3 removed and a prune that deleted or repacked packs", psum, psum.Prune)
	}
	if got := snapshotTimes(t, r); !slices.Equal(got, []string{"alpha 2026-01-05 20:00:00"}) {
		t.Errorf("after forget --prune: snapshots %q", got)
	}
	r.mustRun("check", "--read-data")
	var restored strings.Builder
	restored.WriteString(r.mustRun("dump", "latest", "/db.sql"))
	if !strings.HasPrefix(restored.String(), "dump 5 2026-01-05 20:00:00\n") {
		t.Errorf("the kept snapshot's content is wrong after prune: %.40q", restored.String())
	}
}

// TestE2EForgetIDs: forgetting by id still works, with a dry run, and a
// missing id fails the command after removing the others.
func TestE2EForgetIDs(t *testing.T) {
	t.Parallel()
	snaps := []*forgetSnap{
		{at: "2026-02-01 10:00:00", host: "h"},
		{at: "2026-02-02 10:00:00", host: "h"},
		{at: "2026-02-03T11:00:00+01:00", host: "h"}, // RFC 3339: 10:00 UTC
	}
	r := forgetRepo(t, snaps)
	if got, want := snapshotTimes(t, r), []string{"h 2026-02-01 10:00:00", "h 2026-02-02 10:00:00", "h 2026-02-03 10:00:00"}; !slices.Equal(got, want) {
		t.Fatalf("snapshots made with --time: %q, want %q", got, want)
	}
	if _, stderr, code := r.run(strings.NewReader("x"), "backup", "--stdin", "--time", "yesterday"); code != 2 || !strings.Contains(stderr, "--time") {
		t.Errorf("backup --time yesterday: exit %d, want 2\n%s", code, stderr)
	}

	text := r.mustRun("forget", "--dry-run", snaps[0].id[:8])
	if !strings.Contains(text, "remove "+snaps[0].id[:8]+" 2026-02-01 10:00:00\n") || !strings.Contains(text, "would remove 1 snapshot(s)") {
		t.Errorf("forget --dry-run ID:\n%s", text)
	}
	if n := len(snapshotTimes(t, r)); n != 3 {
		t.Fatalf("dry run removed snapshots: %d left", n)
	}

	stdout, stderr, code := r.run(nil, "forget", snaps[0].id[:8], "deadbeef")
	if code != 1 || !strings.Contains(stdout, "1 snapshot(s) removed") || !strings.Contains(stderr, "1 of 2 snapshots not removed") {
		t.Errorf("forget of one existing and one missing id: exit %d\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	r.mustRun("forget", "latest")
	if got := snapshotTimes(t, r); !slices.Equal(got, []string{"h 2026-02-02 10:00:00"}) {
		t.Errorf("after forgetting the first and the latest: %q", got)
	}
}
