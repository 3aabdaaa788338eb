package sftp

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"repo/backend"
)

// HostKeyError is the refusal to talk to a server whose host key is not
// trusted: unknown to known_hosts, different from the key known_hosts
// has for the host (Changed), revoked, or not the fingerprint
// Options.HostKeyFingerprint asks for. It is permanent.
type HostKeyError struct {
	// Host is the server as known_hosts names it: "host", or
	// "[host]:port" for a port other than 22.
	Host string
	// KeyType and Fingerprint describe the key the server offered;
	// Fingerprint is "SHA256:…" as ssh-keygen -l prints it.
	KeyType, Fingerprint string
	// Known lists the keys known_hosts holds for Host, one
	// "file:line: type SHA256:…" each. Empty when the host is unknown.
	Known []string
	// Changed is true when known_hosts has other keys for Host: either
	// the key was replaced or someone is intercepting the connection.
	Changed bool
	// Revoked is true when known_hosts marks the offered key @revoked.
	Revoked bool
	// Want is Options.HostKeyFingerprint when it was set and did not match.
	Want string
	// Files are the known_hosts files that were read; hint is how to
	// connect with ssh to accept the key (e.g. "ssh -p 2222 user@host").
	Files []string
	hint  string
	// knownFileArg is " -f FILE" when the known key is not in the
	// default ~/.ssh/known_hosts, for the ssh-keygen hint.
	knownFileArg string
}

func (e *HostKeyError) Error() string {
	offered := e.KeyType + " key " + e.Fingerprint
	switch {
	case e.Want != "":
		return fmt.Sprintf("host key of %s is %s, not the expected %s; refusing to connect", e.Host, offered, e.Want)
	case e.Revoked:
		return fmt.Sprintf("host key of %s (%s) is marked @revoked in %s; refusing to connect", e.Host, offered, strings.Join(e.Known, ", "))
	case e.Changed:
		return fmt.Sprintf("WARNING: THE HOST KEY OF %s HAS CHANGED: the server offered %s, but known_hosts has %s. "+
			"Someone may be intercepting the connection (man-in-the-middle attack), or the server's key was replaced. Refusing to connect. "+
			"If the change is expected, remove the old key (ssh-keygen -R '%s'%s) and connect again",
			e.Host, offered, strings.Join(e.Known, "; "), e.Host, e.knownFileArg)
	}
	files := "no known_hosts file exists"
	if len(e.Files) > 0 {
		files = "not in " + strings.Join(e.Files, ", ")
	}
	return fmt.Sprintf("unknown host %s (%s): it offered the %s; if that is the server's key, add it to known_hosts (e.g. connect once with %q) or accept the fingerprint %s explicitly",
		e.Host, files, offered, e.hint, e.Fingerprint)
}

// hostKeys checks server host keys against known_hosts files and an
// optional fingerprint.
type hostKeys struct {
	check  ssh.HostKeyCallback // nil when no known_hosts file exists
	files  []string
	want   string // Options.HostKeyFingerprint, normalised; "" for none
	hint   string
	algos  []string // host key algorithms in the order to negotiate them; nil for the default
	target string   // the server as known_hosts names it
}

// defaultKnownHosts are read when Options.KnownHostsFile is empty.
func defaultKnownHosts() []string {
	files := []string{"/etc/ssh/ssh_known_hosts"}
	if home, err := os.UserHomeDir(); err == nil {
		files = append([]string{filepath.Join(home, ".ssh", "known_hosts")}, files...)
	}
	return files
}

func newHostKeys(opts Options, loc Location, user string) (*hostKeys, error) {
	hk := &hostKeys{want: opts.HostKeyFingerprint, target: knownhosts.Normalize(loc.addr())}
	hk.hint = "ssh " + user + "@" + loc.Host
	if loc.Port != "" && loc.Port != "22" {
		hk.hint = "ssh -p " + loc.Port + " " + user + "@" + loc.Host
	}
	files := defaultKnownHosts()
	if opts.KnownHostsFile != "" {
		files = []string{opts.KnownHostsFile}
	}
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			hk.files = append(hk.files, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("read known hosts: %w", err)
		}
	}
	if len(hk.files) == 0 {
		return hk, nil
	}
	check, err := knownhosts.New(hk.files...)
	if err != nil {
		return nil, fmt.Errorf("read known hosts: %w", err)
	}
	hk.check = check
	hk.algos = knownAlgorithms(check, loc.addr())
	return hk, nil
}

// knownAlgorithms returns the host key algorithms to negotiate, those of
// the keys known_hosts has for addr first, as OpenSSH orders them: a
// server with an ECDSA and an Ed25519 key, of which only the Ed25519 one
// is known, must not be reported as changed because the negotiation
// (which prefers ECDSA) picked the other. It returns nil (the default
// order) for an unknown host.
func knownAlgorithms(check ssh.HostKeyCallback, addr string) []string {
	// Ask about a key nobody has: the mismatch lists the known keys.
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil
	}
	probe, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil
	}
	var ke *knownhosts.KeyError
	if !errors.As(check(addr, &net.TCPAddr{IP: net.IPv4zero, Port: 22}, probe.PublicKey()), &ke) || len(ke.Want) == 0 {
		return nil
	}
	var algos []string
	seen := make(map[string]bool)
	for _, k := range ke.Want {
		typ := k.Key.Type()
		names := []string{typ}
		if typ == ssh.KeyAlgoRSA {
			names = []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
		}
		for _, n := range names {
			if !seen[n] {
				seen[n] = true
				algos = append(algos, n)
			}
		}
	}
	// Then everything else, so that a server that lost the known key
	// type still gets as far as the check, which reports the change.
	for _, n := range append(ssh.SupportedAlgorithms().HostKeys, ssh.KeyAlgoRSA) {
		if !seen[n] {
			seen[n] = true
			algos = append(algos, n)
		}
	}
	return algos
}

// callback is the ssh.HostKeyCallback. A matching HostKeyFingerprint
// wins over known_hosts, also over a changed key there: the user named
// the key to trust.
func (hk *hostKeys) callback(hostname string, remote net.Addr, key ssh.PublicKey) error {
	e := &HostKeyError{
		Host: hk.target, KeyType: key.Type(), Fingerprint: ssh.FingerprintSHA256(key),
		Files: hk.files, hint: hk.hint,
	}
	if hk.want != "" {
		if e.Fingerprint == hk.want {
			return nil
		}
		e.Want = hk.want
		return e
	}
	if hk.check == nil {
		return e
	}
	err := hk.check(hostname, remote, key)
	var (
		ke *knownhosts.KeyError
		re *knownhosts.RevokedError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &re):
		e.Revoked = true
		e.Known = []string{fmt.Sprintf("%s:%d", re.Revoked.Filename, re.Revoked.Line)}
		return e
	case errors.As(err, &ke):
		for _, k := range ke.Want {
			e.Known = append(e.Known, fmt.Sprintf("%s:%d: %s %s", k.Filename, k.Line, k.Key.Type(), ssh.FingerprintSHA256(k.Key)))
		}
		e.Changed = len(e.Known) > 0
		if e.Changed && ke.Want[0].Filename != defaultKnownHosts()[0] {
			e.knownFileArg = " -f " + ke.Want[0].Filename
		}
		return e
	}
	return err
}

// normFingerprint checks the form of a HostKeyFingerprint option and
// returns it as ssh.FingerprintSHA256 prints it (no base64 padding).
func normFingerprint(fp string) (string, error) {
	fp = strings.TrimSpace(fp)
	b64, ok := strings.CutPrefix(fp, "SHA256:")
	b64 = strings.TrimRight(b64, "=")
	if !ok || len(b64) != 43 {
		return "", fmt.Errorf("invalid host key fingerprint %q: want SHA256:… as ssh-keygen -l prints it", fp)
	}
	return "SHA256:" + b64, nil
}

// keys are the client's credentials: signers loaded from key files once,
// and the ssh agent, asked afresh at every connection.
type keys struct {
	files     []ssh.Signer
	fileNames []string
	agentSock string   // "" when the agent is not used
	notes     []string // keys skipped, and why; shown when authentication fails
}

// defaultIdentities are the key files tried when Options.IdentityFiles is
// empty, in OpenSSH's order.
var defaultIdentities = []string{"id_ed25519", "id_ecdsa", "id_rsa"}

// loadKeys reads the key files. Explicit IdentityFiles must all load; of
// the default ones, missing files are ignored and encrypted or unreadable
// ones skipped with a note.
func loadKeys(opts Options) (*keys, error) {
	k := &keys{}
	if len(opts.IdentityFiles) > 0 {
		for _, f := range opts.IdentityFiles {
			s, err := readKey(f)
			if err != nil {
				return nil, backend.Permanent(fmt.Errorf("identity file %s: %w", f, err))
			}
			k.files = append(k.files, s)
			k.fileNames = append(k.fileNames, f)
		}
		return k, nil
	}
	k.agentSock = os.Getenv("SSH_AUTH_SOCK")
	if k.agentSock == "" {
		k.notes = append(k.notes, "no ssh agent (SSH_AUTH_SOCK is not set)")
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return k, nil
	}
	for _, name := range defaultIdentities {
		f := filepath.Join(home, ".ssh", name)
		s, err := readKey(f)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			k.notes = append(k.notes, fmt.Sprintf("skipped %s: %v", f, err))
		default:
			k.files = append(k.files, s)
			k.fileNames = append(k.fileNames, f)
		}
	}
	return k, nil
}

func readKey(file string) (ssh.Signer, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	s, err := ssh.ParsePrivateKey(pem)
	var pm *ssh.PassphraseMissingError
	if errors.As(err, &pm) {
		return nil, errors.New("the key is encrypted; add it to the ssh agent (ssh-add) to use it")
	}
	return s, err
}

// session returns the signers for one connection and a function that
// closes the agent connection (after the handshake). An unreachable agent
// is a note, not an error: the key files may do.
func (k *keys) session() (signers []ssh.Signer, notes []string, done func()) {
	notes = append([]string(nil), k.notes...)
	done = func() {}
	if k.agentSock != "" {
		c, err := net.Dial("unix", k.agentSock)
		if err != nil {
			notes = append(notes, fmt.Sprintf("ssh agent at %s: %v", k.agentSock, err))
		} else {
			done = func() { c.Close() }
			s, err := agent.NewClient(c).Signers()
			if err != nil {
				notes = append(notes, fmt.Sprintf("ssh agent: %v", err))
			}
			signers = append(signers, s...)
			notes = append(notes, fmt.Sprintf("tried %d key(s) of the ssh agent", len(s)))
		}
	}
	signers = append(signers, k.files...)
	if len(k.fileNames) > 0 {
		notes = append(notes, "tried "+strings.Join(k.fileNames, ", "))
	}
	if len(signers) == 0 {
		notes = append(notes, "no usable key (looked for ~/.ssh/"+strings.Join(defaultIdentities, ", ~/.ssh/")+")")
	}
	return signers, notes, done
}
