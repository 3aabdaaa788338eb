package main

import (
	"encoding/json"
	"fmt"
	"io"
	"runtime/debug"
	"time"

	"repo/repo"
)

// version is set with -ldflags "-X main.version=…" by the Makefile.
var version = "dev"

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
		v += " " + bi.GoVersion
	}
	return v
}

// printJSON writes v as one line of JSON.
func printJSON(w io.Writer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(map[string]string{"message_type": "error", "error": err.Error()})
	}
	w.Write(append(b, '\n'))
}

// noticeJSON is a line of free text in JSON output: an action a
// maintenance operation takes, or a lock it found in its way. Its
// message_type names the operation ("prune", "repair", "lock_notice"); the
// message is the line the text output prints, meant for people, not for
// parsing. See docs/json.md.
type noticeJSON struct {
	MessageType string `json:"message_type"`
	Message     string `json:"message"`
}

// actionReporter returns the Report func of a maintenance operation: each
// action as a line on stdout (none with --quiet), or with --json as an
// object of message_type msgType.
func (g *globalOptions) actionReporter(msgType string) func(string) {
	return func(msg string) {
		if g.json {
			printJSON(g.out, noticeJSON{msgType, msg})
		} else if !g.quiet {
			fmt.Fprintln(g.out, msg)
		}
	}
}

// formatBytes renders n in binary units with one decimal, e.g. "985.3 MiB".
func formatBytes(n int64) string { return repo.FormatBytes(n) }

// formatDuration renders d as "1:02:03" or "2.35s" for short ones.
func formatDuration(d time.Duration) string {
	if d < time.Minute {
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	s := int(d.Round(time.Second).Seconds())
	if s >= 3600 {
		return fmt.Sprintf("%d:%02d:%02d", s/3600, s/60%60, s%60)
	}
	return fmt.Sprintf("%d:%02d", s/60, s%60)
}
