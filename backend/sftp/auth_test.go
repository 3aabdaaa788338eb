package sftp

import (
	"context"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"repo/backend"
	"repo/internal/testserver"
)

// openErr opens a repository on srv with opts and returns the error.
func openErr(t *testing.T, srv *testServer, opts Options) error {
	t.Helper()
	dir := filepath.Join(srv.Dir, "repo")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	be, err := Open(context.Background(), srv.location(dir), opts)
	if err == nil {
		be.Close()
	}
	return err
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return name
}

func TestHostKeys(t *testing.T) {
	srv := startServer(t)
	dir := t.TempDir()
	host := knownhosts.Normalize("127.0.0.1:" + srv.Port)
	otherKey, _ := testserver.NewKey(t)
	changed := writeFile(t, filepath.Join(dir, "changed"), "# a comment\n"+knownhosts.Line([]string{host}, otherKey)+"\n")
	empty := writeFile(t, filepath.Join(dir, "empty"), "")

	withKnownHosts := func(file string) Options {
		opts := srv.options()
		opts.KnownHostsFile = file
		return opts
	}
	withFingerprint := func(file, fp string) Options {
		opts := withKnownHosts(file)
		opts.HostKeyFingerprint = fp
		return opts
	}
	tests := []struct {
		name string
		opts Options
		// want is nil for success, else checked against the error.
		want func(t *testing.T, e *HostKeyError)
	}{
		{"known", srv.options(), nil},
		{"hashed entry", withKnownHosts(writeFile(t, filepath.Join(dir, "hashed"),
			knownhosts.Line([]string{knownhosts.HashHostname(host)}, srv.HostKey)+"\n")), nil},
		{"wildcard entry", withKnownHosts(writeFile(t, filepath.Join(dir, "wildcard"),
			knownhosts.Line([]string{"[127.0.0.*]:" + srv.Port}, srv.HostKey)+"\n")), nil},
		{"unknown", withKnownHosts(empty), func(t *testing.T, e *HostKeyError) {
			if e.Changed || len(e.Known) != 0 {
				t.Errorf("unknown host reported as changed: %+v", e)
			}
			for _, s := range []string{"unknown host " + host, srv.fingerprint(), "ssh -p " + srv.Port + " root@127.0.0.1", empty} {
				if !strings.Contains(e.Error(), s) {
					t.Errorf("message %q does not contain %q", e, s)
				}
			}
		}},
		{"other hosts only", withKnownHosts(writeFile(t, filepath.Join(dir, "other"),
			knownhosts.Line([]string{"[127.0.0.1]:1", "example.com"}, srv.HostKey)+"\n")), func(t *testing.T, e *HostKeyError) {
			if e.Changed {
				t.Errorf("host with no entry reported as changed: %+v", e)
			}
		}},
		{"no known_hosts file", withKnownHosts(filepath.Join(dir, "missing")), func(t *testing.T, e *HostKeyError) {
			if e.Changed || !strings.Contains(e.Error(), "no known_hosts file exists") {
				t.Errorf("got %v", e)
			}
		}},
		{"changed", withKnownHosts(changed), func(t *testing.T, e *HostKeyError) {
			if !e.Changed || len(e.Known) != 1 || !strings.HasPrefix(e.Known[0], changed+":2: ") {
				t.Errorf("got %+v, want a changed key naming %s:2", e, changed)
			}
			for _, s := range []string{"HOST KEY OF " + host + " HAS CHANGED", srv.fingerprint(), ssh.FingerprintSHA256(otherKey), "man-in-the-middle", "ssh-keygen -R '" + host + "' -f " + changed} {
				if !strings.Contains(e.Error(), s) {
					t.Errorf("message %q does not contain %q", e, s)
				}
			}
		}},
		{"revoked", withKnownHosts(writeFile(t, filepath.Join(dir, "revoked"),
			"@revoked * "+string(ssh.MarshalAuthorizedKey(srv.HostKey))+knownhosts.Line([]string{host}, srv.HostKey)+"\n")), func(t *testing.T, e *HostKeyError) {
			if !e.Revoked || !strings.Contains(e.Error(), "revoked") {
				t.Errorf("got %+v, want revoked", e)
			}
		}},
		{"fingerprint of an unknown host", withFingerprint(empty, srv.fingerprint()), nil},
		{"fingerprint with padding and spaces", withFingerprint(empty, " "+srv.fingerprint()+"= "), nil},
		{"fingerprint overrides a changed key", withFingerprint(changed, srv.fingerprint()), nil},
		{"wrong fingerprint", withFingerprint(srv.KnownHostsFile, ssh.FingerprintSHA256(otherKey)), func(t *testing.T, e *HostKeyError) {
			if e.Want != ssh.FingerprintSHA256(otherKey) || !strings.Contains(e.Error(), "not the expected") {
				t.Errorf("got %+v, want a fingerprint mismatch", e)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := openErr(t, srv, tt.opts)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				return
			}
			var e *HostKeyError
			if !errors.As(err, &e) {
				t.Fatalf("open: got %v, want a *HostKeyError", err)
			}
			if !backend.IsPermanent(err) {
				t.Errorf("%v is not permanent", err)
			}
			if e.Fingerprint != srv.fingerprint() || e.KeyType != ssh.KeyAlgoED25519 || e.Host != host {
				t.Errorf("got host %q key %s %s, want %q %s %s", e.Host, e.KeyType, e.Fingerprint, host, ssh.KeyAlgoED25519, srv.fingerprint())
			}
			tt.want(t, e)
		})
	}

	for _, fp := range []string{"MD5:aa:bb", "SHA256:short", srv.fingerprint()[len("SHA256:"):]} {
		err := openErr(t, srv, withFingerprint(empty, fp))
		if err == nil || !backend.IsPermanent(err) || !strings.Contains(err.Error(), "invalid host key fingerprint") {
			t.Errorf("fingerprint %q: got %v, want a permanent error", fp, err)
		}
	}
}

// TestHostKeyAlgorithms checks that the key type known_hosts has is
// negotiated first, not the one x/crypto prefers.
func TestHostKeyAlgorithms(t *testing.T) {
	dir := t.TempDir()
	edKey, _ := testserver.NewKey(t)
	file := writeFile(t, filepath.Join(dir, "known_hosts"),
		knownhosts.Line([]string{"example.com"}, edKey)+"\n"+
			"example.com ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDm8CkSLxrnJZy2qGEESoYvbuDN1VhFv0Di/3QAFgtv3Eeto8V2jeBwUB+3qrpQ8d+GLhKtn4/M2AeMuSdUO8gAnfjbyE6zJDj0aMIaNqTi3xhOVnUjpVrcs0R8nIqGWgpiNP5IetPYwzkk7CXT7ouyIT3SrL6xv3RYTx8GWpRL5Q==\n")
	check, err := knownhosts.New(file)
	if err != nil {
		t.Fatal(err)
	}
	algos := knownAlgorithms(check, "example.com:22")
	want := []string{ssh.KeyAlgoED25519, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA}
	if len(algos) < len(want) || strings.Join(algos[:len(want)], ",") != strings.Join(want, ",") {
		t.Errorf("knownAlgorithms = %q, want %q first", algos, want)
	}
	if !strings.Contains(strings.Join(algos, ","), ssh.KeyAlgoECDSA256) {
		t.Errorf("knownAlgorithms = %q: other algorithms are missing", algos)
	}
	if algos := knownAlgorithms(check, "unknown.example.com:22"); algos != nil {
		t.Errorf("unknown host: knownAlgorithms = %q, want nil", algos)
	}
}

func encryptedKey(t *testing.T, file string) {
	t.Helper()
	_, priv := testserver.NewKey(t)
	block, err := ssh.MarshalPrivateKeyWithPassphrase(priv, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, file, string(pem.EncodeToMemory(block)))
}

// startAgent serves an ssh agent holding keys on a socket in a temporary
// directory and returns the socket's path.
func startAgent(t *testing.T, keys ...any) string {
	t.Helper()
	kr := agent.NewKeyring()
	for _, k := range keys {
		if err := kr.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = agent.ServeAgent(kr, c)
			}()
		}
	}()
	return sock
}

// TestAuth checks where keys come from. It sets HOME and SSH_AUTH_SOCK,
// so it must not run in parallel.
func TestAuth(t *testing.T) {
	srv := startServer(t)
	_, otherKey := testserver.NewKey(t)
	dir := t.TempDir()
	otherFile := filepath.Join(dir, "other_key")
	testserver.WriteKey(t, otherFile, otherKey)
	encFile := filepath.Join(dir, "encrypted_key")
	encryptedKey(t, encFile)
	clientPEM, err := os.ReadFile(srv.IdentityFile)
	if err != nil {
		t.Fatal(err)
	}
	knownHosts, err := os.ReadFile(srv.KnownHostsFile)
	if err != nil {
		t.Fatal(err)
	}

	// home makes a home directory with the given ~/.ssh files.
	home := func(t *testing.T, files map[string]string) string {
		h := t.TempDir()
		for name, content := range files {
			writeFile(t, filepath.Join(h, ".ssh", name), content)
		}
		return h
	}
	tests := []struct {
		name    string
		home    map[string]string // ~/.ssh
		agent   []any             // keys of the agent; nil: no agent
		sock    string            // SSH_AUTH_SOCK when there is no agent
		opts    Options
		wantErr []string // parts of a permanent error; nil for success
	}{
		{name: "identity file", opts: srv.options()},
		{name: "wrong identity file", opts: Options{KnownHostsFile: srv.KnownHostsFile, IdentityFiles: []string{otherFile}},
			wantErr: []string{"log in to 127.0.0.1:" + srv.Port + " as root", "tried " + otherFile}},
		{name: "missing identity file", opts: Options{KnownHostsFile: srv.KnownHostsFile, IdentityFiles: []string{filepath.Join(dir, "missing")}},
			wantErr: []string{"identity file " + filepath.Join(dir, "missing")}},
		{name: "encrypted identity file", opts: Options{KnownHostsFile: srv.KnownHostsFile, IdentityFiles: []string{encFile}},
			wantErr: []string{"identity file " + encFile, "encrypted"}},
		{name: "identity files ignore the agent", agent: []any{srv.ClientKey},
			opts:    Options{KnownHostsFile: srv.KnownHostsFile, IdentityFiles: []string{otherFile}},
			wantErr: []string{"log in to"}},
		{name: "agent", agent: []any{otherKey, srv.ClientKey}, opts: Options{KnownHostsFile: srv.KnownHostsFile}},
		{name: "default key and known_hosts", home: map[string]string{"id_ed25519": string(clientPEM), "known_hosts": string(knownHosts)}},
		{name: "default rsa name", home: map[string]string{"id_rsa": string(clientPEM), "known_hosts": string(knownHosts)}},
		{name: "agent unreachable, key file works", sock: filepath.Join(dir, "no-agent.sock"),
			home: map[string]string{"id_ecdsa": string(clientPEM), "known_hosts": string(knownHosts)}},
		{name: "encrypted default key skipped", home: map[string]string{"known_hosts": string(knownHosts)},
			wantErr: []string{"skipped ", ".ssh/id_ed25519", "encrypted", "ssh-add"}},
		{name: "encrypted default key, agent works", agent: []any{srv.ClientKey}, home: map[string]string{"known_hosts": string(knownHosts)}},
		{name: "no keys at all", home: map[string]string{"known_hosts": string(knownHosts)}, opts: Options{},
			wantErr: []string{"no usable key", "no ssh agent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := home(t, tt.home)
			if strings.Contains(tt.name, "encrypted default") {
				encryptedKey(t, filepath.Join(h, ".ssh", "id_ed25519"))
			}
			t.Setenv("HOME", h)
			sock := tt.sock
			if tt.agent != nil {
				sock = startAgent(t, tt.agent...)
			}
			t.Setenv("SSH_AUTH_SOCK", sock)
			err := openErr(t, srv, tt.opts)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("open: %v", err)
				}
				return
			}
			if err == nil || !backend.IsPermanent(err) {
				t.Fatalf("open: got %v, want a permanent error", err)
			}
			for _, s := range tt.wantErr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}
