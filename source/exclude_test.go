package source

import (
	"errors"
	"math/rand/v2"
	"path"
	"strconv"
	"strings"
	"testing"
)

func TestExcluded(t *testing.T) {
	type check struct {
		path string
		want bool
	}
	for _, tc := range []struct {
		pattern string
		checks  []check
	}{
		{"*.tmp", []check{
			{"/a/b/x.tmp", true},
			{"/x.tmp", true},
			{"/a/.tmp", true},
			{"/a/x.tmp/below", true}, // a matched directory covers its tree
			{"/a/x.tmpl", false},
			{"/a/tmp", false},
			{"/", false},
		}},
		{"/home/*/cache", []check{
			{"/home/u/cache", true},
			{"/home/u/cache/f", true},
			{"/home/.hidden/cache", true},
			{"/home/cache", false},
			{"/home/u/x/cache", false},
			{"/other/home/u/cache", false},
			{"/home/u/cache2", false},
			{"/homes/u/cache", false},
			{"/home", false},
			{"/", false},
		}},
		{"cache/*", []check{
			{"/x/cache/a", true},
			{"/cache/a", true},
			{"/x/cache/a/b", true},
			{"/x/cache", false},
			{"/x/notcache/a", false},
			{"/x/cachex/a", false},
		}},
		{"node_modules", []check{
			{"/p/node_modules", true},
			{"/node_modules", true},
			{"/p/node_modules/x/y", true},
			{"/p/node_modules2", false},
			{"/p/my_node_modules", false},
		}},
		{"a/b/c", []check{
			{"/a/b/c", true},
			{"/x/a/b/c/d", true},
			{"/a/b", false},
			{"/b/c", false},
			{"/a/x/b/c", false},
		}},
		{"/a/**/b", []check{
			{"/a/b", true}, // "**" may be empty
			{"/a/x/b", true},
			{"/a/x/y/z/b", true},
			{"/a/x/b/c", true},
			{"/x/a/b", false},
			{"/a/bb", false},
			{"/a", false},
			{"/a/x/y", false},
		}},
		{"**/x", []check{
			{"/x", true},
			{"/a/b/x", true},
			{"/a/x/c", true},
			{"/a/xx", false},
			{"/", false},
		}},
		{"/a/**", []check{
			{"/a", true},
			{"/a/b/c", true},
			{"/b/a", false},
		}},
		{"**/cache/**/*.o", []check{
			{"/a/cache/b/c/x.o", true},
			{"/cache/x.o", true},
			{"/a/x.o", false},
			{"/a/cache/x.c", false},
		}},
		{"**", []check{
			{"/", true},
			{"/anything/at/all", true},
		}},
		{"/", []check{
			{"/", true},
			{"/a/b", true},
		}},
		{"*", []check{
			{"/", false},
			{"/a", true},
		}},
		{"/tmp/?.log", []check{
			{"/tmp/a.log", true},
			{"/tmp/ü.log", true}, // ? is one character, not one byte
			{"/tmp/ab.log", false},
			{"/tmp/.log", false},
		}},
		{"[a-c]*.go", []check{
			{"/src/b_test.go", true},
			{"/src/a.go", true},
			{"/src/d.go", false},
			{"/src/B.go", false},
		}},
		{"file[!0-9]", []check{ // shell negation
			{"/x/filea", true},
			{"/x/file!", true},
			{"/x/file1", false},
		}},
		{"file[^0-9]", []check{
			{"/x/filea", true},
			{"/x/file1", false},
		}},
		{"[!a]*[!b]", []check{
			{"/x/xyz", true},
			{"/x/ayz", false},
			{"/x/xyb", false},
		}},
		{"[[!]x", []check{ // '[' and '!' are members, not a negation
			{"/x/[x", true},
			{"/x/!x", true},
			{"/x/ax", false},
		}},
		{`\[!a]`, []check{ // escaped: no class at all
			{"/x/[!a]", true},
			{"/x/b", false},
		}},
		{"cache*", []check{
			{"/x/cache", true},
			{"/x/cache-2/f", true},
			{"/x/mycache", false},
		}},
		{`\*.txt`, []check{
			{"/a/*.txt", true},
			{"/a/x.txt", false},
		}},
		{"with space", []check{
			{"/a/with space/f", true},
			{"/a/with/space", false},
			{"/a/with  space", false},
		}},
		{"/srv/My Files/*.bak", []check{
			{"/srv/My Files/db.bak", true},
			{"/srv/MyFiles/db.bak", false},
		}},
		{"ünï*", []check{
			{"/x/ünïcödé", true},
			{"/x/unicode", false},
		}},
		{"日本語/*.txt", []check{
			{"/日本語/a.txt", true},
			{"/home/日本語/b.txt", true},
			{"/日本/a.txt", false},
		}},
		{"new\nline", []check{
			{"/a/new\nline", true},
			{"/a/new line", false},
		}},
		{"a/../b", []check{ // cleaned to "b"
			{"/b", true},
			{"/a/b", true},
			{"/a", false},
		}},
		{"cache/", []check{ // cleaned to "cache"
			{"/x/cache", true},
			{"/x/cache/y", true},
		}},
		{"./x", []check{ // cleaned to "x"
			{"/x", true},
			{"/a/x", true},
		}},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			e, err := NewExcluder([]string{tc.pattern})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tc.checks {
				if got := e.Excluded(c.path); got != c.want {
					t.Errorf("pattern %q, Excluded(%q) = %v, want %v", tc.pattern, c.path, got, c.want)
				}
			}
		})
	}
}

func TestExcluderSeveralPatterns(t *testing.T) {
	e, err := NewExcluder([]string{"*.tmp", "/home/*/cache", "node_modules"})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want bool
	}{
		{"/a/x.tmp", true},
		{"/home/u/cache", true},
		{"/src/node_modules/x", true},
		{"/home/u/src/main.go", false},
		{"/", false},
	} {
		if got := e.Excluded(c.path); got != c.want {
			t.Errorf("Excluded(%q) = %v, want %v", c.path, got, c.want)
		}
	}
}

func TestExcluderNone(t *testing.T) {
	var nilE *Excluder
	if nilE.Excluded("/a") {
		t.Error("nil Excluder excludes /a")
	}
	e, err := NewExcluder(nil)
	if err != nil {
		t.Fatal(err)
	}
	if e.Excluded("/a") || e.Excluded("/") {
		t.Error("Excluder without patterns excludes something")
	}
}

func TestExcluderDeepPath(t *testing.T) {
	// Deeper than the components Excluded splits without allocating.
	deep := "/" + strings.Repeat("d/", 2*maxStackComponents) + "x.tmp"
	e, err := NewExcluder([]string{"*.tmp", "/d/**/d/x.tmp"})
	if err != nil {
		t.Fatal(err)
	}
	if !e.Excluded(deep) {
		t.Error("deep .tmp file not excluded")
	}
	if e.Excluded(strings.TrimSuffix(deep, ".tmp")) {
		t.Error("deep non-.tmp file excluded")
	}
}

func TestNewExcluderErrors(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		bad     bool // wraps path.ErrBadPattern
	}{
		{"", false},
		{".", false},
		{"[", true},
		{"a/[b", true},
		{"/x/[]", true},
		{"[a-", true},
		{`foo\`, true},
		{"ok/[z-a", true},
	} {
		t.Run(tc.pattern, func(t *testing.T) {
			_, err := NewExcluder([]string{"*.ok", tc.pattern})
			if err == nil {
				t.Fatalf("NewExcluder(%q) succeeded", tc.pattern)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tc.pattern)) {
				t.Errorf("error %q does not name the pattern", err)
			}
			if got := errors.Is(err, path.ErrBadPattern); got != tc.bad {
				t.Errorf("errors.Is(%v, path.ErrBadPattern) = %v, want %v", err, got, tc.bad)
			}
		})
	}
}

// refMatch is a slow, obviously correct matcher: pat (components, "**"
// for zero or more) matches all of comps.
func refMatch(pat, comps []string) bool {
	if len(pat) == 0 {
		return len(comps) == 0
	}
	if pat[0] == "**" {
		for i := 0; i <= len(comps); i++ {
			if refMatch(pat[1:], comps[i:]) {
				return true
			}
		}
		return false
	}
	if len(comps) == 0 {
		return false
	}
	ok, err := path.Match(pat[0], comps[0])
	return err == nil && ok && refMatch(pat[1:], comps[1:])
}

// refExcluded applies the documented rule literally: some ancestor-or-self
// of p is matched in full (anchored) or by a trailing run (unanchored).
func refExcluded(pattern, p string) bool {
	clean := path.Clean(pattern)
	anchored := strings.HasPrefix(clean, "/")
	var pat []string
	if clean != "/" {
		pat = strings.Split(strings.TrimPrefix(clean, "/"), "/")
	}
	var comps []string
	if p != "/" {
		comps = strings.Split(strings.TrimPrefix(p, "/"), "/")
	}
	for end := 0; end <= len(comps); end++ {
		q := comps[:end]
		if anchored {
			if refMatch(pat, q) {
				return true
			}
			continue
		}
		for start := 0; start <= len(q); start++ {
			if refMatch(pat, q[start:]) {
				return true
			}
		}
	}
	return false
}

func TestExcludedAgainstReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	names := []string{"a", "b", "ab", "x.tmp", "cache", "c d"}
	parts := []string{"a", "b", "*", "?", "*.tmp", "[a-b]", "cache", "a*", "*b", "**", "c d", "[^a]*"}
	for range 20000 {
		var pat []string
		for range 1 + rng.IntN(4) {
			pat = append(pat, parts[rng.IntN(len(parts))])
		}
		pattern := strings.Join(pat, "/")
		if rng.IntN(2) == 0 {
			pattern = "/" + pattern
		}
		var comps []string
		for range rng.IntN(6) {
			comps = append(comps, names[rng.IntN(len(names))])
		}
		p := "/" + strings.Join(comps, "/")
		e, err := NewExcluder([]string{pattern})
		if err != nil {
			t.Fatal(err)
		}
		if got, want := e.Excluded(p), refExcluded(pattern, p); got != want {
			t.Fatalf("pattern %q, Excluded(%q) = %v, reference says %v", pattern, p, got, want)
		}
	}
}

func BenchmarkExcluded(b *testing.B) {
	e, err := NewExcluder([]string{
		"*.tmp", "*.o", "*~", ".cache", "node_modules", "__pycache__",
		"/home/*/.local/share/Trash", "/proc", "/sys", "target/debug",
		"/var/**/*.log",
	})
	if err != nil {
		b.Fatal(err)
	}
	p := "/home/user/src/project/internal/pkg/sub/file_name.go"
	b.ReportAllocs()
	for b.Loop() {
		if e.Excluded(p) {
			b.Fatal("excluded")
		}
	}
}
