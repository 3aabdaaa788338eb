package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"repo/repo"
	"repo/repo/crypto"
)

// newKeyOptions are the flags of the commands that make a key file.
type newKeyOptions struct {
	newPasswordFile string
	host, user      string
	kdfMemoryMiB    int
	kdfTime         int
}

func (o *newKeyOptions) addFlags(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&o.newPasswordFile, "new-password-file", "", "read the new password from `file` instead of asking for it twice on the terminal")
	f.StringVar(&o.host, "host", "", "host `name` recorded in the new key, for listings (default: this host)")
	f.StringVar(&o.user, "user", "", "user `name` recorded in the new key, for listings (default: this user)")
	f.IntVar(&o.kdfMemoryMiB, "kdf-memory", 64, "argon2id memory in `MiB` for the new password (1 to 4096)")
	f.IntVar(&o.kdfTime, "kdf-time", 3, "argon2id passes for the new password (1 to 100)")
}

// check validates the flags before the repository is opened.
func (o *newKeyOptions) check() error {
	if o.kdfMemoryMiB < 1 || o.kdfMemoryMiB > 4096 || o.kdfTime < 1 || o.kdfTime > 100 {
		return usageError("--kdf-memory must be 1 to 4096 MiB and --kdf-time 1 to 100")
	}
	return nil
}

// keyOptions reads the new password and returns the library's options.
func (o *newKeyOptions) keyOptions(g *globalOptions) (repo.KeyOptions, error) {
	pw, err := g.newPassword(o.newPasswordFile)
	if err != nil {
		return repo.KeyOptions{}, err
	}
	return repo.KeyOptions{
		Password: pw,
		KDF:      crypto.KDFParams{Time: uint32(o.kdfTime), MemoryKiB: uint32(o.kdfMemoryMiB) << 10, Threads: crypto.DefaultKDF.Threads},
		Host:     o.host,
		Username: o.user,
	}, nil
}

// newPassword returns a new password: the content of file (its trailing
// line break removed), or one typed twice on the terminal. Unlike
// password, it never looks at REPO_PASSWORD or --password-file: those give
// the current password.
func (g *globalOptions) newPassword(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("read new password file: %w", err)
		}
		pw := strings.TrimRight(string(b), "\r\n")
		if pw == "" {
			return "", usageError("new password file %s is empty", file)
		}
		return pw, nil
	}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil || !term.IsTerminal(int(tty.Fd())) {
		if tty != nil {
			tty.Close()
		}
		return "", usageError("no terminal to ask for the new password on: use --new-password-file FILE")
	}
	defer tty.Close()
	ask := func(p string) (string, error) {
		fmt.Fprint(tty, p)
		b, err := term.ReadPassword(int(tty.Fd()))
		fmt.Fprintln(tty)
		if err != nil {
			return "", fmt.Errorf("read new password: %w", err)
		}
		return string(b), nil
	}
	pw, err := ask("enter the new password: ")
	if err != nil {
		return "", err
	}
	if pw == "" {
		return "", usageError("empty password")
	}
	again, err := ask("enter the new password again: ")
	if err != nil {
		return "", err
	}
	if again != pw {
		return "", &codeError{exitPassword, errors.New("the passwords do not match")}
	}
	return pw, nil
}

func newKeyCmd(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Use:   "key",
		Short: "List, add, remove or change the passwords of the repository",
		Long: `An encrypted repository has one master key, made by init, and one or more
key files in keys/, each wrapping that master key with its own password. Any
of the passwords opens the repository. Adding, removing or changing a
password writes or removes key files only: no data is re-encrypted, so it
takes a moment whatever the repository's size. (Someone who has read a key
file and knows its password keeps the master key: to lock them out, back up
into a new repository.)

Subcommands and the lock they take:
  key list                 none: keys do not change data
  key add                  shared: runs beside backups
  key remove ID            exclusive: two removals must not race
  key passwd               exclusive, like remove

The current password comes from REPO_PASSWORD, REPO_PASSWORD_FILE,
--password-file or a prompt, as for every command; a new one from
--new-password-file or a prompt (twice) on the terminal.

Examples:
  repo key list
  repo key add --host laptop --user ann
  repo key add --new-password-file /root/second-pw
  repo key remove 3fa2b1c9
  repo key passwd

Exit codes: 0 ok, 1 error, 2 usage, 10 no repository, 11 repository locked,
12 wrong password (or the new passwords typed do not match).`,
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			switch {
			case len(args) > 0:
				return usageError("unknown key command %q (want list, add, remove or passwd; see 'repo key --help')", args[0])
			case g.json:
				// The help text is not JSON; a script that asks for
				// JSON gets a usage error it can parse instead.
				return usageError("key needs a command: list, add, remove or passwd (see 'repo key --help')")
			}
			return c.Help()
		},
	}
	c.AddCommand(newKeyListCmd(g), newKeyAddCmd(g), newKeyRemoveCmd(g), newKeyPasswdCmd(g))
	return c
}

func newKeyListCmd(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Use:   "list",
		Short: "List the key files; * marks the one the password opened",
		Long: `List the key files of the repository, oldest first: id, user, host and
creation time. The key the given password opened is marked with *. User and
host are labels written when the key was made, not checked.

key list takes no lock.

Examples:
  repo key list
  repo key list --json | jq -r 'select(.message_type=="key") | .id'

Exit codes: 0 ok, 1 error (also: a key file is unreadable), 2 usage, 10 no
repository, 12 wrong password.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error { return runKeyList(c.Context(), g) },
	}
	return withLock(c, lockNone)
}

// keyItemJSON is one key file in key list --json. An unreadable one has
// only its id, short_id, current and error.
type keyItemJSON struct {
	MessageType string `json:"message_type"`
	ShortID     string `json:"short_id"`
	repo.KeyInfo
	Error string `json:"error,omitempty"`
}

// keyListSummary is the summary line of key list --json.
type keyListSummary struct {
	MessageType string `json:"message_type"`
	Keys        int    `json:"keys"`
	Current     string `json:"current"` // the id of the key the password opened
	Unreadable  int    `json:"unreadable"`
}

// keyChangeSummary is the summary line of key add, remove and passwd
// --json: the ids of the key files written and removed.
type keyChangeSummary struct {
	MessageType string `json:"message_type"`
	Added       string `json:"added,omitempty"`
	Removed     string `json:"removed,omitempty"`
}

func runKeyList(ctx context.Context, g *globalOptions) error {
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	if !r.Config().Encrypted {
		return repo.ErrNotEncrypted
	}
	keys, err := r.Keys(ctx)
	if err != nil {
		return err
	}
	broken := 0
	for _, k := range keys {
		if k.Err != nil {
			broken++
		}
	}
	if g.json {
		for _, k := range keys {
			msg := keyItemJSON{MessageType: "key", ShortID: k.ShortID(), KeyInfo: k}
			if k.Err != nil {
				msg.Error = k.Err.Error()
			}
			printJSON(g.out, msg)
		}
		printJSON(g.out, keyListSummary{"summary", len(keys), r.KeyID(), broken})
	} else {
		tw := tabwriter.NewWriter(g.out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, " ID\tUser\tHost\tCreated")
		for _, k := range keys {
			mark := " "
			if k.Current {
				mark = "*"
			}
			if k.Err != nil {
				fmt.Fprintf(tw, "%s%s\t\t\tunreadable: %v\n", mark, k.ShortID(), k.Err)
				continue
			}
			fmt.Fprintf(tw, "%s%s\t%s\t%s\t%s\n", mark, k.ShortID(), k.Username, k.Host, k.Created.Local().Format("2006-01-02 15:04:05"))
		}
		tw.Flush()
	}
	if broken > 0 {
		return fmt.Errorf("%d of %d key files could not be read", broken, len(keys))
	}
	return nil
}

func newKeyAddCmd(g *globalOptions) *cobra.Command {
	var o newKeyOptions
	c := &cobra.Command{
		Use:   "add",
		Short: "Add a password (a new key file)",
		Long: `Add a key file that wraps the repository's master key with a new
password. Afterwards the new password and every existing one open the
repository. Only the key file is written; nothing is re-encrypted.

The new password is read from --new-password-file, or asked for twice on
the terminal; REPO_PASSWORD and --password-file give the current one.
--kdf-memory and --kdf-time set the argon2id cost of the new key, as at
init. The key is read back and opened before the command reports it.

key add takes a shared lock: it runs beside backups, but not during key
remove or key passwd.

Examples:
  repo key add
  repo key add --host laptop --user ann
  repo key add --new-password-file /root/second-pw --json

Exit codes: 0 added, 1 error, 2 usage (e.g. no terminal and no
--new-password-file), 10 no repository, 11 locked, 12 wrong password or
the new passwords typed do not match.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error { return runKeyAdd(c.Context(), g, o) },
	}
	o.addFlags(c)
	return withLock(c, lockShared)
}

// openForNewKey is what key add and key passwd do first: check the flags,
// open the (encrypted) repository with the command's lock, and get the new
// password. On error everything is closed already.
func openForNewKey(ctx context.Context, g *globalOptions, o newKeyOptions) (*repo.Repository, context.Context, func(), repo.KeyOptions, error) {
	var opts repo.KeyOptions
	if err := o.check(); err != nil {
		return nil, nil, nil, opts, err
	}
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return nil, nil, nil, opts, err
	}
	if !r.Config().Encrypted {
		closeRepo()
		return nil, nil, nil, opts, repo.ErrNotEncrypted
	}
	if opts, err = o.keyOptions(g); err != nil {
		closeRepo()
		return nil, nil, nil, opts, err
	}
	return r, ctx, closeRepo, opts, nil
}

func runKeyAdd(ctx context.Context, g *globalOptions, o newKeyOptions) error {
	r, ctx, closeRepo, opts, err := openForNewKey(ctx, g, o)
	if err != nil {
		return err
	}
	defer closeRepo()
	id, err := r.AddKey(ctx, opts)
	if err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, keyChangeSummary{MessageType: "summary", Added: id})
		return nil
	}
	g.verbosef("added key %s", id[:8])
	return nil
}

func newKeyRemoveCmd(g *globalOptions) *cobra.Command {
	c := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a password (a key file)",
		Long: `Remove the key file ID (an id or a unique prefix, as key list shows it);
its password no longer opens the repository. The key this command was
opened with cannot be removed (open with another password, or use key
passwd), nor can the only key: the repository would become unreadable.

A copy of the key file, with its password, still unlocks the repository:
removing a key does not change the master key.

key remove takes the exclusive lock, so that two removals cannot leave the
repository without a key.

Examples:
  repo key remove 3fa2b1c9

Exit codes: 0 removed, 1 error (no such key, the key in use, the last
key), 2 usage, 10 no repository, 11 locked, 12 wrong password.`,
		Args: argsRange(1, 1),
		RunE: func(c *cobra.Command, args []string) error { return runKeyRemove(c.Context(), g, args[0]) },
	}
	return withLock(c, lockExclusive)
}

func runKeyRemove(ctx context.Context, g *globalOptions, ref string) error {
	r, ctx, closeRepo, err := g.openRepository(ctx, false)
	if err != nil {
		return err
	}
	defer closeRepo()
	if !r.Config().Encrypted {
		return repo.ErrNotEncrypted
	}
	id, err := r.FindKey(ctx, ref)
	if err != nil {
		return err
	}
	if err := r.RemoveKey(ctx, id); err != nil {
		return err
	}
	if g.json {
		printJSON(g.out, keyChangeSummary{MessageType: "summary", Removed: id})
		return nil
	}
	g.verbosef("removed key %s", id[:8])
	return nil
}

func newKeyPasswdCmd(g *globalOptions) *cobra.Command {
	var o newKeyOptions
	c := &cobra.Command{
		Use:   "passwd",
		Short: "Change the password the repository was opened with",
		Long: `Change the current password: add a key file with the new password, read
it back, and only then remove the key file the current password opened. A
crash or error in between leaves both keys, each opening the repository
with its own password; never none. Other keys are not touched, and nothing
but key files is written.

The new password is read from --new-password-file, or asked for twice on
the terminal. --host, --user, --kdf-memory and --kdf-time apply to the new
key as for key add.

key passwd takes the exclusive lock, like key remove.

Examples:
  repo key passwd
  repo key passwd --new-password-file /root/new-pw

Exit codes: 0 changed, 1 error (when the new key was saved but the old one
could not be removed, both passwords work: remove the old key with the new
password), 2 usage, 10 no repository, 11 locked, 12 wrong password or the
new passwords typed do not match.`,
		Args: argsRange(0, 0),
		RunE: func(c *cobra.Command, _ []string) error { return runKeyPasswd(c.Context(), g, o) },
	}
	o.addFlags(c)
	return withLock(c, lockExclusive)
}

func runKeyPasswd(ctx context.Context, g *globalOptions, o newKeyOptions) error {
	r, ctx, closeRepo, opts, err := openForNewKey(ctx, g, o)
	if err != nil {
		return err
	}
	defer closeRepo()
	res, err := r.ChangePassword(ctx, opts)
	if err != nil {
		if res.Added != "" && r.KeyID() == res.Added {
			// Only the removal failed.
			return fmt.Errorf("%w; run 'repo key remove %s' with the new password to finish", err, res.Added[:8])
		}
		return err
	}
	if g.json {
		printJSON(g.out, keyChangeSummary{"summary", res.Added, res.Removed})
		return nil
	}
	g.verbosef("added key %s with the new password, removed key %s", res.Added[:8], res.Removed[:8])
	return nil
}
