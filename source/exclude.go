package source

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// errEmptyPattern rejects "" (and "." after cleaning), which would
// otherwise silently match nothing.
var errEmptyPattern = errors.New("empty pattern")

// Excluder decides which paths a backup skips.
//
// An Excluder is immutable after NewExcluder and safe for concurrent use.
// A nil *Excluder excludes nothing.
type Excluder struct {
	patterns []pattern
}

// pattern is one compiled exclude pattern.
type pattern struct {
	anchored bool   // started with "/": matched from the root
	parts    []part // the cleaned pattern's components
	// seq is set when parts contain "**": parts with a leading "**" when
	// unanchored and a trailing "**" (a match of a directory covers what
	// is below it), consecutive "**" collapsed. nil otherwise.
	seq []part
}

type partKind uint8

const (
	partGlob       partKind = iota // anything else: path.Match
	partLiteral                    // no metacharacters: ==
	partAny                        // "*"
	partPrefix                     // "lit*"
	partSuffix                     // "*lit"
	partDoubleStar                 // "**": zero or more components
)

// part is one pattern component. The literal kinds avoid path.Match for
// the common shapes ("node_modules", "*.tmp", "cache*"), since Excluded
// runs for every entry of a backup.
type part struct {
	kind partKind
	s    string // the component, or its literal part for partPrefix/partSuffix
}

func compilePart(c string) part {
	if c == "**" {
		return part{kind: partDoubleStar}
	}
	if c == "*" {
		return part{kind: partAny}
	}
	const meta = `*?[\`
	if !strings.ContainsAny(c, meta) {
		return part{kind: partLiteral, s: c}
	}
	if rest, ok := strings.CutSuffix(c, "*"); ok && !strings.ContainsAny(rest, meta) {
		return part{kind: partPrefix, s: rest}
	}
	if rest, ok := strings.CutPrefix(c, "*"); ok && !strings.ContainsAny(rest, meta) {
		return part{kind: partSuffix, s: rest}
	}
	return part{kind: partGlob, s: c}
}

func (p *part) match(name string) bool {
	switch p.kind {
	case partLiteral:
		return name == p.s
	case partAny, partDoubleStar:
		return true
	case partPrefix:
		return strings.HasPrefix(name, p.s)
	case partSuffix:
		return strings.HasSuffix(name, p.s)
	}
	ok, _ := path.Match(p.s, name) // validated in NewExcluder
	return ok
}

// NewExcluder compiles patterns. A pattern is matched against the absolute,
// cleaned path of an entry: shell globs per path component (*, ?, [...]),
// "**" for any number of components; a pattern that does not start with "/"
// may match at any depth (it matches any trailing run of components, so
// "*.tmp" matches every .tmp file and "cache/*" every child of any
// "cache" directory). Matching a directory excludes all below it. A
// malformed pattern is an error naming it.
//
// A class is negated with "[!...]" as in the shell, or "[^...]". Patterns
// are cleaned first (path.Clean), so "cache/" is "cache". The pattern "/"
// excludes everything.
func NewExcluder(patterns []string) (*Excluder, error) {
	e := &Excluder{patterns: make([]pattern, 0, len(patterns))}
	for _, src := range patterns {
		p, err := compilePattern(src)
		if err != nil {
			return nil, fmt.Errorf("compile exclude pattern %q: %w", src, err)
		}
		e.patterns = append(e.patterns, p)
	}
	return e, nil
}

func compilePattern(src string) (pattern, error) {
	if src == "" {
		return pattern{}, errEmptyPattern
	}
	clean := path.Clean(src)
	if clean == "." {
		return pattern{}, errEmptyPattern
	}
	p := pattern{anchored: strings.HasPrefix(clean, "/")}
	hasDoubleStar := false
	for c := range strings.SplitSeq(strings.TrimPrefix(clean, "/"), "/") {
		if c == "" {
			continue // only for the pattern "/"
		}
		c = shellNegation(c)
		// Matching against "" never succeeds, but path.Match still scans
		// the whole pattern and reports a malformed one.
		if _, err := path.Match(c, ""); err != nil {
			return pattern{}, err
		}
		pt := compilePart(c)
		hasDoubleStar = hasDoubleStar || pt.kind == partDoubleStar
		p.parts = append(p.parts, pt)
	}
	if hasDoubleStar {
		var seq []part
		add := func(pt part) {
			if pt.kind == partDoubleStar && len(seq) > 0 && seq[len(seq)-1].kind == partDoubleStar {
				return
			}
			seq = append(seq, pt)
		}
		if !p.anchored {
			add(part{kind: partDoubleStar})
		}
		for _, pt := range p.parts {
			add(pt)
		}
		add(part{kind: partDoubleStar})
		p.seq = seq
	}
	return p, nil
}

// shellNegation rewrites character classes negated the shell way, "[!...]",
// to the "[^...]" that path.Match understands, so patterns written for a
// shell or for .gitignore mean the same here.
func shellNegation(c string) string {
	if !strings.Contains(c, "[!") {
		return c
	}
	b := []byte(c)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++ // the escaped byte is literal
		case '[':
			if i+1 < len(b) && b[i+1] == '!' {
				b[i+1] = '^'
			}
			// Skip to the closing ']': a '[' inside a class is literal.
			for i++; i < len(b) && b[i] != ']'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		}
	}
	return string(b)
}

// maxStackComponents is how many path components Excluded splits without
// allocating; deeper paths still work.
const maxStackComponents = 64

// Excluded reports whether path (absolute, cleaned) is excluded.
//
// It reports true also when an ancestor of path is matched, so a path named
// directly (a backup target below an excluded directory) is excluded the
// same way as one reached by walking. A walker should not descend into an
// excluded directory; then every call is answered by the entry itself,
// after a few string comparisons for the common pattern shapes.
func (e *Excluder) Excluded(path string) bool {
	if e == nil || len(e.patterns) == 0 {
		return false
	}
	var buf [maxStackComponents]string
	comps := splitPath(buf[:0], path)
	for i := range e.patterns {
		if e.patterns[i].matches(comps) {
			return true
		}
	}
	return false
}

// splitPath appends the non-empty components of p to dst.
func splitPath(dst []string, p string) []string {
	for p != "" {
		i := strings.IndexByte(p, '/')
		if i < 0 {
			return append(dst, p)
		}
		if i > 0 {
			dst = append(dst, p[:i])
		}
		p = p[i+1:]
	}
	return dst
}

// matches reports whether p matches comps or a prefix of comps (an
// ancestor directory).
func (p *pattern) matches(comps []string) bool {
	if p.seq != nil {
		return matchSeq(p.seq, comps)
	}
	k := len(p.parts)
	if p.anchored {
		return k <= len(comps) && matchAt(p.parts, comps, 0)
	}
	if k == 0 {
		return false // unreachable: only "/" has no parts, and it is anchored
	}
	if k == 1 { // the common case ("*.tmp", "node_modules"), kept tight
		pt := &p.parts[0]
		for i := len(comps) - 1; i >= 0; i-- {
			if pt.match(comps[i]) {
				return true
			}
		}
		return false
	}
	// Every run of k consecutive components, the entry's own first.
	for s := len(comps) - k; s >= 0; s-- {
		if matchAt(p.parts, comps, s) {
			return true
		}
	}
	return false
}

// matchAt reports whether parts match comps[s:s+len(parts)], comparing
// from the last part, usually the most selective one.
func matchAt(parts []part, comps []string, s int) bool {
	for i := len(parts) - 1; i >= 0; i-- {
		if !parts[i].match(comps[s+i]) {
			return false
		}
	}
	return true
}

// matchSeq reports whether seq matches all of comps, where a "**" part
// matches zero or more components and any other part exactly one. It is
// the usual wildcard algorithm (backtrack to the last "**"), O(len(seq) *
// len(comps)) in the worst case.
func matchSeq(seq []part, comps []string) bool {
	pi, ci := 0, 0
	starP, starC := -1, 0
	for ci < len(comps) {
		switch {
		case pi < len(seq) && seq[pi].kind == partDoubleStar:
			starP, starC = pi, ci
			pi++
		case pi < len(seq) && seq[pi].match(comps[ci]):
			pi++
			ci++
		case starP >= 0:
			starC++
			pi, ci = starP+1, starC
		default:
			return false
		}
	}
	for pi < len(seq) && seq[pi].kind == partDoubleStar {
		pi++
	}
	return pi == len(seq)
}
