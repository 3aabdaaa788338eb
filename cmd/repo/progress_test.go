package main

import (
	"testing"
	"time"

	"repo/repo"
)

// TestFigures: the fraction done is by bytes, else files, else items; the
// time left exists only with final totals and some work done, and follows
// the phase's pace.
func TestFigures(t *testing.T) {
	for _, c := range []struct {
		name string
		st   repo.ProgressState
		want figures
	}{
		{"nothing known", repo.ProgressState{FilesDone: 3}, figures{}},
		{"bytes first", repo.ProgressState{BytesDone: 25, BytesTotal: 100, FilesDone: 9, FilesTotal: 10, TotalsFinal: true},
			figures{fraction: 0.25, known: true, remaining: 30 * time.Second, remainingOK: true}},
		{"files", repo.ProgressState{FilesDone: 5, FilesTotal: 10, TotalsFinal: true},
			figures{fraction: 0.5, known: true, remaining: 10 * time.Second, remainingOK: true}},
		{"items", repo.ProgressState{ItemsDone: 1, ItemsTotal: 4, TotalsFinal: true},
			figures{fraction: 0.25, known: true, remaining: 30 * time.Second, remainingOK: true}},
		{"totals still counted", repo.ProgressState{BytesDone: 50, BytesTotal: 100},
			figures{fraction: 0.5, known: true}},
		{"no work done", repo.ProgressState{BytesTotal: 100, TotalsFinal: true},
			figures{known: true}},
		{"done past the total", repo.ProgressState{FilesDone: 12, FilesTotal: 10, TotalsFinal: true},
			figures{fraction: 1, known: true, remainingOK: true}},
		{"nothing to do", repo.ProgressState{TotalsFinal: true},
			figures{fraction: 1, known: true, remainingOK: true}},
	} {
		if got := figuresOf(c.st, 10*time.Second); got != c.want {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}

func TestProgressText(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/plain/name.txt", "/plain/name.txt"},
		{"/a\nb\x1b[31m\tc", "/a?b?[31m?c"},
		{"/bad\xffutf8", "/bad?utf8"},
	} {
		if got := printable(c.in); got != c.want {
			t.Errorf("printable(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct {
		in   string
		n    int
		want string
	}{
		{"/home/ann/file", 20, "/home/ann/file"},
		{"/home/ann/file", 8, "…nn/file"},
		{"/home/ann/file", 1, "/home/ann/file"},
	} {
		if got := shortenLeft(c.in, c.n); got != c.want {
			t.Errorf("shortenLeft(%q, %d) = %q, want %q", c.in, c.n, got, c.want)
		}
	}
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{42 * time.Second, "0:42"},
		{62*time.Minute + 3*time.Second, "1:02:03"},
		{1499 * time.Millisecond, "0:01"},
	} {
		if got := formatClock(c.d); got != c.want {
			t.Errorf("formatClock(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
