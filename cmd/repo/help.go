package main

// The command line's own help: the groups of 'repo help', the examples and
// exit codes every command's help must show, suggestions for mistyped
// commands and flags, shell completion of flags with a fixed set of values,
// and the help, completion and man-page commands. The commands themselves
// live in their own files; organizeHelp finishes the tree once they are all
// added, so that no command file has to know about any of this.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
	"github.com/spf13/pflag"
)

// commandGroups are the sections of 'repo help', in order, and the root
// commands in each. Every root command belongs to one (TestHelpGroups), so
// that none lands in cobra's catch-all "Additional Commands".
var commandGroups = []struct {
	id, title string
	commands  []string
}{
	{"backup", "Back up and restore:", []string{"backup", "restore", "dump"}},
	{"inspect", "Inspect:", []string{"snapshots", "ls", "diff", "stats", "check", "list-broken-files", "locks"}},
	{"maintain", "Maintain:", []string{"forget", "prune", "purge-broken-files", "unlock", "key"}},
	{"setup", "Set up:", []string{"init", "completion", "version", "help"}},
}

// helpExamples supplies, by command path, the examples of commands whose
// definition has none. The command files write theirs into Long, with an
// "Exit codes:" paragraph after them; the root's Long is an overview, so
// its examples come from here. TestHelpEveryCommand fails for any command
// that ends up without examples or exit codes.
var helpExamples = map[string]string{
	"repo": `  repo init -r /srv/backup
  repo backup -r /srv/backup /home /etc
  repo snapshots -r /srv/backup
  repo restore -r /srv/backup latest --target /tmp/restore
  repo help backup`,
}

// organizeHelp finishes the command tree under root once every command is
// added: groups for 'repo help', the examples from helpExamples,
// suggestions for mistyped subcommands, and completion of flags with fixed
// values.
func organizeHelp(root *cobra.Command) {
	for _, grp := range commandGroups {
		root.AddGroup(&cobra.Group{ID: grp.id, Title: grp.title})
		for _, name := range grp.commands {
			if c, _, err := root.Find([]string{name}); err == nil && c != root {
				c.GroupID = grp.id
			}
		}
	}
	walkCommands(root, func(c *cobra.Command) {
		// cobra applies its default distance only to the root's own
		// unknown-command error; SuggestionsFor, which the usage errors
		// here and in root.go call, uses the field as it is.
		c.SuggestionsMinimumDistance = 2
		if ex, ok := helpExamples[c.CommandPath()]; ok && c.Example == "" && !strings.Contains(c.Long, "Examples:") {
			c.Example = ex
		}
		if c != root && c.HasSubCommands() && c.RunE != nil {
			suggestSubcommands(c)
		}
	})
	registerFlagCompletions(root)
}

// longOrShort is what cobra shows as a command's description.
func longOrShort(c *cobra.Command) string {
	if c.Long != "" {
		return c.Long
	}
	return c.Short
}

// walkCommands calls fn for c and every command below it, parents first.
func walkCommands(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		walkCommands(sub, fn)
	}
}

// suggestSubcommands makes an unknown subcommand of c (a runnable parent
// such as key, whose RunE reports unknown names) a usage error that names
// the nearest subcommand, when there is one; otherwise c's RunE decides.
func suggestSubcommands(c *cobra.Command) {
	runE := c.RunE
	c.RunE = func(c *cobra.Command, args []string) error {
		if len(args) > 0 && len(c.SuggestionsFor(args[0])) > 0 {
			return unknownCommandError(c, args[0])
		}
		return runE(c, args)
	}
}

// unknownCommandError is the usage error for a subcommand name that parent
// lacks, with the nearest one it has when there is one.
func unknownCommandError(parent *cobra.Command, name string) error {
	path := strings.TrimPrefix(parent.CommandPath()+" ", parent.Root().Name()+" ")
	msg := fmt.Sprintf("unknown command %q", path+name)
	if s := parent.SuggestionsFor(name); len(s) > 0 {
		msg += fmt.Sprintf(" (did you mean %q?)", path+s[0])
	}
	return usageError("%s; see '%s --help'", msg, parent.CommandPath())
}

// flagSuggestion returns, for an unknown-flag error of c, a hint such as
// " (did you mean --exclude?)" naming c's nearest flag, or, when the flag
// belongs to another command, which one; "" when there is nothing to say.
func flagSuggestion(c *cobra.Command, err error) string {
	var ne *pflag.NotExistError
	if !errors.As(err, &ne) || ne.GetSpecifiedShortnames() != "" {
		// A shorthand is one letter: too little to guess from.
		return ""
	}
	typed := strings.ToLower(ne.GetSpecifiedName())
	if name := nearestFlag(c, typed); name != "" {
		return fmt.Sprintf(" (did you mean --%s?)", name)
	}
	var owners []string
	walkCommands(c.Root(), func(o *cobra.Command) {
		if o != c && !o.Hidden && o.LocalNonPersistentFlags().Lookup(typed) != nil {
			owners = append(owners, "'"+o.CommandPath()+"'")
		}
	})
	if len(owners) > 0 {
		return fmt.Sprintf(" (--%s is a flag of %s)", typed, strings.Join(owners, ", "))
	}
	return ""
}

// nearestFlag returns the flag of c whose name is nearest to typed: within
// an edit distance of 2 (1 for names of up to 4 letters, where 2 would
// match almost anything), or else the only flag that typed is a prefix of
// ("--dry" for --dry-run). It returns "" when no flag is near enough.
func nearestFlag(c *cobra.Command, typed string) string {
	limit := 2
	if len(typed) <= 4 {
		limit = 1
	}
	best, bestDist := "", limit+1
	var prefixed []string
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		d := editDistance(typed, f.Name)
		if d < bestDist || (d == bestDist && f.Name < best) {
			best, bestDist = f.Name, d
		}
		if len(typed) >= 2 && strings.HasPrefix(f.Name, typed) {
			prefixed = append(prefixed, f.Name)
		}
	})
	if best == "" && len(prefixed) == 1 {
		best = prefixed[0]
	}
	return best
}

// editDistance is the Levenshtein distance between a and b in bytes (flag
// names are ASCII).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// flagValues are the flags that take one of a fixed set of values, by
// command path and flag name, with what each value means: shells complete
// them (registerFlagCompletions), and TestFlagCompletions checks that each
// value is still named in the command's help (the flag's usage or default,
// or the command's description), so that the lists cannot drift apart
// unnoticed.
var flagValues = []struct {
	command, flag string
	values        []cobra.Completion
}{
	{"repo init", "compression", compressionValues},
	{"repo backup", "compression", compressionValues},
	{"repo restore", "overwrite", []cobra.Completion{
		cobra.CompletionWithDesc("always", "replace existing entries"),
		cobra.CompletionWithDesc("if-changed", "keep entries equal to the snapshot's"),
		cobra.CompletionWithDesc("if-newer", "keep entries not older than the snapshot's"),
		cobra.CompletionWithDesc("never", "keep existing entries"),
	}},
	{"repo forget", "group-by", []cobra.Completion{
		"host,paths", "host", "paths", "tags", "host,tags", "paths,tags", "host,paths,tags",
	}},
	{"repo prune", "max-unused", maxUnusedValues},
}

var compressionValues = []cobra.Completion{
	cobra.CompletionWithDesc("auto", "the default: fastest today"),
	cobra.CompletionWithDesc("fastest", "zstd's fastest level"),
	cobra.CompletionWithDesc("better", "zstd's default level: smaller, slower"),
	cobra.CompletionWithDesc("off", "no compression"),
}

// maxUnusedValues are examples rather than the whole set (any N% works):
// completing them still saves looking up the syntax.
var maxUnusedValues = []cobra.Completion{
	cobra.CompletionWithDesc("5%", "the default"),
	cobra.CompletionWithDesc("0%", "repack every partly used pack"),
	cobra.CompletionWithDesc("unlimited", "only delete unused packs, never repack"),
}

// dirFlags take a directory: shells complete directory names only.
var dirFlags = []struct{ command, flag string }{
	{"repo restore", "target"},
	{"repo", "cache-dir"},
}

// registerFlagCompletions registers the completion of flagValues and
// dirFlags on the tree under root. A flag that is missing is skipped here
// and reported by TestFlagCompletions.
func registerFlagCompletions(root *cobra.Command) {
	find := func(path string) *cobra.Command {
		c, _, err := root.Find(strings.Fields(path)[1:])
		if err != nil || c.CommandPath() != path {
			return nil
		}
		return c
	}
	for _, fv := range flagValues {
		if c := find(fv.command); c != nil {
			_ = c.RegisterFlagCompletionFunc(fv.flag, cobra.FixedCompletions(fv.values, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	for _, df := range dirFlags {
		if c := find(df.command); c != nil {
			_ = c.RegisterFlagCompletionFunc(df.flag, func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
				return nil, cobra.ShellCompDirectiveFilterDirs
			})
		}
	}
}

// newHelpCmd replaces cobra's help command, which shows the root's help for
// a topic it does not know; this one says so and suggests the nearest.
func newHelpCmd() *cobra.Command {
	return withLock(&cobra.Command{
		Use:   "help [COMMAND...]",
		Short: "Show the help of a command, with examples and exit codes",
		Long: `Show the help of COMMAND (e.g. "backup" or "key add"), or, without one, the
list of commands. 'repo COMMAND --help' shows the same.

Examples:
  repo help
  repo help backup
  repo help key add

Exit codes: 0 ok, 2 usage (no such command).`,
		ValidArgsFunction: func(c *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			parent, _, err := c.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var names []cobra.Completion
			for _, sub := range parent.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					names = append(names, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(c *cobra.Command, args []string) error {
			target, rest, err := c.Root().Find(args)
			if err != nil {
				return usageError("%v", err)
			}
			if len(rest) > 0 {
				return unknownCommandError(target, rest[0])
			}
			// What cobra's help command does: show -h and --version.
			target.InitDefaultHelpFlag()
			target.InitDefaultVersionFlag()
			return target.Help()
		},
	}, lockNone)
}

// newCompletionCmd replaces cobra's default completion command, which
// captures its output writer when it is made (before run injects the
// streams) and whose help has no examples or exit codes.
func newCompletionCmd() *cobra.Command {
	c := withLock(&cobra.Command{
		Use:   "completion SHELL",
		Short: "Print the shell completion script for bash, zsh, fish or powershell",
		Long: `Print the script that makes SHELL complete repo's commands, flags and
flag values (--compression, restore --overwrite, forget --group-by, ...).
Load it in the running shell, or install it once for every new one.

Examples:
  source <(repo completion bash)                              # this shell
  repo completion bash > /etc/bash_completion.d/repo          # Debian, all users (needs bash-completion)
  repo completion zsh > "${fpath[1]}/_repo"                   # zsh, with compinit
  repo completion fish > ~/.config/fish/completions/repo.fish

Exit codes: 0 ok, 2 usage (no or an unknown SHELL).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usageError("completion needs a SHELL: bash, zsh, fish or powershell (see 'repo completion --help')")
			}
			if len(c.SuggestionsFor(args[0])) > 0 {
				return unknownCommandError(c, args[0])
			}
			return usageError("unknown shell %q: want bash, zsh, fish or powershell (see 'repo completion --help')", args[0])
		},
		ValidArgsFunction: cobra.NoFileCompletions,
	}, lockNone)
	for _, sh := range []struct {
		name, install, note string
		gen                 func(root *cobra.Command, w io.Writer, descriptions bool) error
	}{
		{"bash", "source <(repo completion bash)\n  repo completion bash > /etc/bash_completion.d/repo",
			"It needs the bash-completion package (on Debian: apt-get install bash-completion).",
			func(root *cobra.Command, w io.Writer, desc bool) error { return root.GenBashCompletionV2(w, desc) }},
		{"zsh", "source <(repo completion zsh)\n  repo completion zsh > \"${fpath[1]}/_repo\"",
			"The completion system must be on (autoload -U compinit; compinit in ~/.zshrc).",
			func(root *cobra.Command, w io.Writer, desc bool) error {
				if desc {
					return root.GenZshCompletion(w)
				}
				return root.GenZshCompletionNoDesc(w)
			}},
		{"fish", "repo completion fish | source\n  repo completion fish > ~/.config/fish/completions/repo.fish",
			"",
			func(root *cobra.Command, w io.Writer, desc bool) error { return root.GenFishCompletion(w, desc) }},
		{"powershell", "repo completion powershell | Out-String | Invoke-Expression",
			"Add that line to your PowerShell profile to load it in every session.",
			func(root *cobra.Command, w io.Writer, desc bool) error {
				if desc {
					return root.GenPowerShellCompletionWithDesc(w)
				}
				return root.GenPowerShellCompletion(w)
			}},
	} {
		var noDesc bool
		sub := withLock(&cobra.Command{
			Use:     sh.name,
			Short:   "Print the completion script for " + sh.name,
			Long:    strings.TrimSpace("Print the completion script for "+sh.name+" on standard output. "+sh.note) + "\n\nExit codes: 0 ok, 2 usage.",
			Example: "  " + sh.install,
			Args:    argsRange(0, 0),
			RunE: func(c *cobra.Command, _ []string) error {
				return sh.gen(c.Root(), c.OutOrStdout(), !noDesc)
			},
			ValidArgsFunction:     cobra.NoFileCompletions,
			DisableFlagsInUseLine: true,
		}, lockNone)
		sub.Flags().BoolVar(&noDesc, "no-descriptions", false, "complete names only, without their descriptions")
		c.AddCommand(sub)
	}
	return c
}

// newManCmd is the hidden 'repo __man DIR' that 'make man' runs. It lives
// in the binary rather than in a generator program because the command
// tree is built in package main, which nothing else can import; and so
// the pages describe exactly the flags of the binary they ship with
// (packagers can run it on the installed binary).
func newManCmd() *cobra.Command {
	return withLock(&cobra.Command{
		Use:    "__man DIR",
		Short:  "Write a man page for every command into DIR",
		Long:   "Write a man page (section 1) for every command into DIR, which must exist.\n\nExit codes: 0 ok, 1 error, 2 usage.",
		Hidden: true,
		Args:   argsRange(1, 1),
		RunE: func(c *cobra.Command, args []string) error {
			return writeManPages(c.Root(), args[0])
		},
	}, lockNone)
}

// writeManPages writes repo.1, repo-backup.1, repo-key-add.1, ... into dir:
// one page per command that 'repo help' lists. Set SOURCE_DATE_EPOCH for a
// reproducible date.
func writeManPages(root *cobra.Command, dir string) error {
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return usageError("man page directory %s: not a directory (create it first)", dir)
	}
	// The help texts are plain text laid out for a terminal; the man page
	// generator reads them as Markdown. Convert them for the run and put
	// them back afterwards.
	saved := map[*cobra.Command]string{}
	walkCommands(root, func(c *cobra.Command) {
		saved[c] = c.Long
		c.Long = textToMarkdown(longOrShort(c))
	})
	defer func() {
		for c, long := range saved {
			c.Long = long
		}
	}()
	header := &doc.GenManHeader{
		Title:   "REPO",
		Section: "1",
		Source:  "repo " + version,
		Manual:  "repo manual",
	}
	if err := doc.GenManTree(root, header, dir); err != nil {
		return fmt.Errorf("write man pages: %w", err)
	}
	return nil
}

// textToMarkdown turns a help text into Markdown that renders the same:
// indented lines (examples, tables, lists) become code blocks, kept as
// they are, and characters that Markdown would take as markup in the
// other lines are escaped.
func textToMarkdown(s string) string {
	var b strings.Builder
	inCode, prevBlank := false, true
	for line := range strings.SplitSeq(s, "\n") {
		indented := strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t")
		switch {
		case strings.TrimSpace(line) == "":
			b.WriteString("\n")
			prevBlank = true
			continue
		case indented:
			if !inCode && !prevBlank {
				b.WriteString("\n") // a code block cannot interrupt a paragraph
			}
			inCode = true
			b.WriteString("    " + line + "\n")
		default:
			if inCode && !prevBlank {
				b.WriteString("\n")
			}
			inCode = false
			b.WriteString(escapeMarkdown(line) + "\n")
		}
		prevBlank = false
	}
	return b.String()
}

// escapeMarkdown backslash-escapes the characters of a text line that
// Markdown reads as emphasis, code, links or HTML, and a leading list or
// heading marker ("- ", "# ", "2. ").
func escapeMarkdown(line string) string {
	var b strings.Builder
	for _, r := range line {
		if strings.ContainsRune("\\`*_[]<>", r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	out := b.String()
	if len(out) > 0 && slices.Contains([]byte("-+#"), out[0]) {
		out = "\\" + out
	}
	if digits := len(out) - len(strings.TrimLeft(out, "0123456789")); digits > 0 && digits < len(out) && (out[digits] == '.' || out[digits] == ')') {
		out = out[:digits] + "\\" + out[digits:]
	}
	return out
}
