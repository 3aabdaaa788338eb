package main

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"repo/repo"
)

// progressMode is how a command shows its progress, decided once from the
// flags and streams (see startProgress).
type progressMode int

const (
	progressNone progressMode = iota // stdout is not a terminal, or --quiet
	progressBar                      // a live line on the terminal
	progressJSON                     // status objects with --json
)

// Default update intervals; REPO_PROGRESS_FPS overrides both.
const (
	barInterval  = 100 * time.Millisecond
	jsonInterval = time.Second
)

// progressUI shows one command's progress and its -v lines. It owns the
// command's output streams while it runs: startProgress replaces g.out
// (and, in bar mode, g.err) by writers that take the UI's lock and wipe
// the progress line before anything else is written, so that no other
// output ever lands inside it or interleaves with a status object. The
// replacement happens before the command starts any goroutine and is
// never undone (after stop the writers only serialise), so no goroutine
// can see g.out change under it.
type progressUI struct {
	g        *globalOptions
	p        *repo.Progress // nil when mode is progressNone
	mode     progressMode
	interval time.Duration
	color    bool
	start    time.Time

	mu sync.Mutex // guards everything below and every write to out and err
	// out and err are the real streams; term is out as a terminal (bar
	// mode only).
	out, err io.Writer
	term     *os.File
	bar      *progressbar.ProgressBar
	barKind  string // what bar was made for: phase, total known
	drawn    bool   // bar is on the screen and must be wiped before output
	stopped  bool
	// phase is the phase drawn last, and samples its bytes done at the
	// last updates, for the rate.
	phase   string
	samples []rateSample

	// quit ends loop, which closes done; both nil without a display.
	quit chan struct{}
	done chan struct{}
}

// startProgress prepares the progress display of the running command,
// before it opens the repository (see progressUI on why so early). Nothing
// is shown until the operation starts its first phase. The command passes
// progress() and onItem() to the operation and calls stop before it
// prints its summary.
//
// The display is a progress bar when stdout is a terminal, status objects
// with --json, and nothing when stdout is a pipe or a file, or with
// --quiet.
func (g *globalOptions) startProgress() *progressUI {
	u := &progressUI{g: g, out: g.out, err: g.err, start: time.Now()}
	switch {
	case g.quiet:
	case g.json:
		u.mode, u.interval = progressJSON, jsonInterval
	case terminalFile(g.out) != nil:
		u.mode, u.interval = progressBar, barInterval
		u.term = terminalFile(g.out)
		u.color = g.colorEnabled(g.out)
	}
	g.out = uiWriter{u, u.out}
	if u.mode == progressBar {
		g.err = uiWriter{u, u.err}
	}
	if u.mode == progressNone {
		return u
	}
	if v := os.Getenv("REPO_PROGRESS_FPS"); v != "" {
		fps, err := strconv.ParseFloat(v, 64)
		if err != nil || fps <= 0 || fps > 1000 {
			fmt.Fprintf(g.err, "warning: REPO_PROGRESS_FPS=%q: want a number of updates per second, more than 0 and at most 1000; using the default\n", v)
		} else {
			u.interval = time.Duration(float64(time.Second) / fps)
		}
	}
	u.p = repo.NewProgress()
	u.quit, u.done = make(chan struct{}), make(chan struct{})
	go u.loop()
	return u
}

// progress is what the operation updates: nil when nothing is shown, so
// that it does no work for totals nobody sees.
func (u *progressUI) progress() *repo.Progress { return u.p }

// stop ends the display: the progress line is wiped, no status object
// follows. The command calls it before printing its summary; it may be
// called again (deferred for the error paths).
func (u *progressUI) stop() {
	// Once stopped is set (under the lock update takes), nothing is
	// drawn or printed any more, even before loop has returned.
	u.mu.Lock()
	first := !u.stopped
	u.stopped = true
	u.wipeLocked()
	u.mu.Unlock()
	if u.quit != nil {
		if first {
			close(u.quit)
		}
		<-u.done
	}
}

func (u *progressUI) loop() {
	defer close(u.done)
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-u.quit:
			return
		case now := <-t.C:
			u.update(now)
		}
	}
}

// update shows the state of now.
func (u *progressUI) update(now time.Time) {
	st := u.p.State()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.stopped || st.Phase == "" {
		return
	}
	f := figuresOf(st, now.Sub(st.PhaseStarted))
	switch u.mode {
	case progressJSON:
		u.statusLocked(st, f, now)
	case progressBar:
		u.drawLocked(st, f, now)
	}
}

// figures are what a display derives from a state.
type figures struct {
	// fraction done of the phase, by bytes when it counts bytes, else by
	// files, else by items; known is false when no total is known yet.
	fraction float64
	known    bool
	// remaining is the time left, estimated from the phase's pace so
	// far; only when remainingOK (the totals are final and some work is
	// done).
	remaining   time.Duration
	remainingOK bool
}

func figuresOf(st repo.ProgressState, phaseElapsed time.Duration) figures {
	var f figures
	var done, total int64
	switch {
	case st.BytesTotal > 0:
		done, total = st.BytesDone, st.BytesTotal
	case st.FilesTotal > 0:
		done, total = st.FilesDone, st.FilesTotal
	case st.ItemsTotal > 0:
		done, total = st.ItemsDone, st.ItemsTotal
	default:
		if st.TotalsFinal {
			// Nothing to do at all: done.
			return figures{fraction: 1, known: true, remainingOK: true}
		}
		return f
	}
	f.known = true
	f.fraction = min(float64(done)/float64(total), 1)
	if st.TotalsFinal && f.fraction > 0 {
		f.remainingOK = true
		f.remaining = time.Duration(float64(phaseElapsed) * (1 - f.fraction) / f.fraction)
	}
	return f
}

// statusJSON is the status object of --json (docs/json.md), printed at
// every interval while an operation runs, never after its summary.
type statusJSON struct {
	MessageType    string  `json:"message_type"` // "status"
	Phase          string  `json:"phase"`
	SecondsElapsed float64 `json:"seconds_elapsed"` // since the command started
	// SecondsRemaining is the phase's estimated time left, only once its
	// totals are final.
	SecondsRemaining *float64 `json:"seconds_remaining,omitempty"`
	// PercentDone is the phase's fraction done, from 0 to 1 (as restic
	// has it), by bytes, else files, else items.
	PercentDone  float64  `json:"percent_done"`
	TotalFiles   int64    `json:"total_files"`
	FilesDone    int64    `json:"files_done"`
	TotalBytes   int64    `json:"total_bytes"`
	BytesDone    int64    `json:"bytes_done"`
	TotalItems   int64    `json:"total_items"`
	ItemsDone    int64    `json:"items_done"`
	TotalsFinal  bool     `json:"totals_final"`
	CurrentFiles []string `json:"current_files,omitempty"`
	Errors       int64    `json:"errors"`
}

func (u *progressUI) statusLocked(st repo.ProgressState, f figures, now time.Time) {
	s := statusJSON{
		MessageType:    "status",
		Phase:          st.Phase,
		SecondsElapsed: roundMillis(now.Sub(u.start)),
		PercentDone:    math.Round(f.fraction*1e4) / 1e4,
		TotalFiles:     st.FilesTotal,
		FilesDone:      st.FilesDone,
		TotalBytes:     st.BytesTotal,
		BytesDone:      st.BytesDone,
		TotalItems:     st.ItemsTotal,
		ItemsDone:      st.ItemsDone,
		TotalsFinal:    st.TotalsFinal,
		Errors:         st.Errors,
	}
	if f.remainingOK {
		r := roundMillis(f.remaining)
		s.SecondsRemaining = &r
	}
	if st.Current != "" {
		s.CurrentFiles = []string{st.Current}
	}
	printJSON(u.out, s)
}

func roundMillis(d time.Duration) float64 { return d.Round(time.Millisecond).Seconds() }

// phaseNames are the words the progress line uses for a phase and for
// the items it counts.
var phaseNames = map[string]struct{ doing, unit string }{
	repo.PhaseBackup:    {"backup", "files"},
	repo.PhaseRestore:   {"restore", "files"},
	repo.PhaseIndex:     {"reading index", "index files"},
	repo.PhaseSnapshots: {"checking snapshots", "snapshots"},
	repo.PhaseReadData:  {"reading packs", "packs"},
	repo.PhaseMark:      {"finding used data", "snapshots"},
	repo.PhaseRepack:    {"repacking", "packs"},
	repo.PhaseDelete:    {"deleting packs", "packs"},
	repo.PhaseScan:      {"reading packs", "packs"},
	repo.PhaseSalvage:   {"salvaging", "packs"},
	repo.PhaseHeal:      {"healing from sources", "files"},
	repo.PhasePurge:     {"purging", "snapshots"},
}

// Colours of the bar, as colour tags of the progressbar library. Custom
// names, so that a file name in the line that happens to contain "[red]"
// is not taken for a tag.
var barColors = map[string]string{"repo_bar": "32", "repo_reset": "0"}

// drawLocked renders the line for st: the library draws the percentage
// and the bar (a spinner while no total is known) and the text after it,
// which says everything else. The bar is made anew when the phase
// changes, or when its total becomes known.
func (u *progressUI) drawLocked(st repo.ProgressState, f figures, now time.Time) {
	if st.Phase != u.phase {
		u.phase, u.samples = st.Phase, u.samples[:0]
	}
	u.samples = append(u.samples, rateSample{now, st.BytesDone})
	// A rate over the last few seconds: steady, yet it follows changes.
	for len(u.samples) > 2 && now.Sub(u.samples[1].at) > 5*time.Second {
		u.samples = u.samples[1:]
	}
	kind := fmt.Sprintf("%s/%v", st.Phase, f.known)
	if u.bar == nil || kind != u.barKind {
		u.wipeLocked()
		u.bar = u.newBar(f.known)
		u.barKind = kind
	}
	// Describe draws (a new bar too, which has no text before), Set64
	// draws again when the percentage changed: the last drawing has both.
	u.bar.Describe(u.description(st, f, now))
	if f.known {
		// In ten-thousandths: the library counts the bar as finished,
		// and stops drawing it, once it reaches the maximum, which the
		// fraction does at the very end; so it stops one short.
		u.bar.Set64(min(int64(f.fraction*10000), 9999))
	} else {
		u.bar.Add64(1) // turns the spinner
	}
	u.drawn = true
}

// rateSample is bytes done at a time, for the rate.
type rateSample struct {
	at    time.Time
	bytes int64
}

func (u *progressUI) newBar(known bool) *progressbar.ProgressBar {
	max := int64(-1)
	if known {
		max = 10000
	}
	opts := []progressbar.Option{
		progressbar.OptionSetWriter(u.term),
		progressbar.OptionSetWidth(10),
		// Counts, rate and times are in the description: the library's
		// would start from this bar, not from the phase or the command.
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(false),
		progressbar.OptionShowDescriptionAtLineEnd(),
		// Rendered only from update, under u.mu: no spinner goroutine of
		// the library's own, which would draw without that lock.
		progressbar.OptionSetSpinnerChangeInterval(0),
		progressbar.OptionEnableColorCodes(u.color),
	}
	if u.color {
		opts = append(opts,
			progressbar.OptionSetCustomColorCodes(barColors),
			progressbar.OptionSetTheme(progressbar.Theme{
				Saucer: "[repo_bar]█[repo_reset]", SaucerPadding: " ", BarStart: "|", BarEnd: "|",
			}))
	}
	return progressbar.NewOptions64(max, opts...)
}

// description is the text after the bar: the time since the command
// started, what of the phase is done of how much, the rate, the time
// left, errors, and the current file as far as the terminal is wide.
func (u *progressUI) description(st repo.ProgressState, f figures, now time.Time) string {
	names, ok := phaseNames[st.Phase]
	if !ok {
		names.doing, names.unit = st.Phase, "items"
	}
	done, total := st.ItemsDone, st.ItemsTotal
	if names.unit == "files" {
		done, total = st.FilesDone, st.FilesTotal
	}
	of := func(done, total int64, format func(int64) string) string {
		switch {
		case total > 0 && st.TotalsFinal:
			return format(done) + "/" + format(total)
		case total > 0:
			return format(done) + "/" + format(total) + "+" // still counting
		}
		return format(done)
	}
	var parts []string
	parts = append(parts, fmt.Sprintf("[%s] %s %s %s", formatClock(now.Sub(u.start)), names.doing,
		of(done, total, func(n int64) string { return strconv.FormatInt(n, 10) }), names.unit))
	if st.BytesTotal > 0 || st.BytesDone > 0 {
		parts = append(parts, of(st.BytesDone, st.BytesTotal, formatBytes))
		if first := u.samples[0]; now.Sub(first.at) > 0 && len(u.samples) > 1 {
			rate := float64(st.BytesDone-first.bytes) / now.Sub(first.at).Seconds()
			parts = append(parts, formatBytes(int64(rate))+"/s")
		}
	}
	if f.remainingOK {
		parts = append(parts, formatClock(f.remaining)+" left")
	}
	if st.Errors > 0 {
		parts = append(parts, fmt.Sprintf("%d errors", st.Errors))
	}
	desc := strings.Join(parts, ", ")
	// Besides the text the line holds the percentage, the bar (which the
	// library narrows from ten columns down to none when the line would
	// not fit) and a few spaces: 22 columns, or 5 for a spinner. Cut to
	// the rest, the line never wraps, which would leave copies of it on
	// the screen.
	room := u.width() - 22
	if !f.known {
		room = u.width() - 5
	}
	n := utf8.RuneCountInString(desc)
	if cur := printable(st.Current); cur != "" && room-n > 12 {
		desc += ", " + shortenLeft(cur, room-n-2)
	}
	if utf8.RuneCountInString(desc) > max(room, 0) {
		desc = string([]rune(desc)[:max(room, 0)])
	}
	return desc
}

// width is the terminal's width, 80 when it cannot be told.
func (u *progressUI) width() int {
	if w, _, err := term.GetSize(int(u.term.Fd())); err == nil && w > 0 {
		return w
	}
	return 80
}

// formatClock renders a duration as "0:42" or "1:02:03".
func formatClock(d time.Duration) string {
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}

// printable replaces what would upset the terminal line (control
// characters, invalid UTF-8) in a file name by "?".
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return '?'
		}
		return r
	}, s)
}

// shortenLeft keeps the end of s (the file name) in n runes.
func shortenLeft(s string, n int) string {
	r := []rune(s)
	if len(r) <= n || n < 2 {
		return s
	}
	return "…" + string(r[len(r)-n+1:])
}

// wipeLocked removes the bar from the screen, if it is there.
func (u *progressUI) wipeLocked() {
	if u.drawn && u.bar != nil {
		u.bar.Clear()
	}
	u.drawn = false
}

// uiWriter is a stream of the command while a progressUI owns it.
type uiWriter struct {
	u *progressUI
	w io.Writer
}

func (w uiWriter) Write(b []byte) (int, error) {
	w.u.mu.Lock()
	defer w.u.mu.Unlock()
	w.u.wipeLocked()
	return w.w.Write(b)
}

// verboseLevel is the -v count from which an item action is printed.
func verboseLevel(action string) int {
	switch action {
	case repo.ItemUnchanged, repo.ItemSkipped:
		return 2
	}
	return 1
}

// verboseJSON is the verbose_status object of --json -v (docs/json.md):
// one file saved or restored.
type verboseJSON struct {
	MessageType string `json:"message_type"` // "verbose_status"
	Action      string `json:"action"`       // new, changed, unchanged, restored, skipped
	Item        string `json:"item"`         // the file's path
	Size        int64  `json:"size"`         // its size in bytes
}

// onItem returns the per-file callback of -v and -vv for the operation,
// nil when no file is to be printed (without -v, or with --quiet).
func (u *progressUI) onItem() func(action, path string, size int64) {
	g := u.g
	if g.verbose == 0 || g.quiet {
		return nil
	}
	return func(action, path string, size int64) {
		if verboseLevel(action) > g.verbose {
			return
		}
		if g.json {
			printJSON(g.out, verboseJSON{"verbose_status", action, path, size})
			return
		}
		fmt.Fprintf(g.out, "%-9s %s (%s)\n", action, path, formatBytes(size))
	}
}

// terminalFile returns w as a file when it is a terminal, else nil.
func terminalFile(w io.Writer) *os.File {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return f
}

// colorEnabled reports whether output to w may be coloured: w is a
// terminal, and neither --no-color nor NO_COLOR (any non-empty value, see
// no-color.org) says otherwise.
func (g *globalOptions) colorEnabled(w io.Writer) bool {
	return !g.noColor && os.Getenv("NO_COLOR") == "" && terminalFile(w) != nil
}
