package sftp

import (
	"syscall"
	"testing"

	"golang.org/x/crypto/ssh"

	"repo/internal/testserver"
)

const sftpServerPath = testserver.SFTPServerPath

// testServer is an OpenSSH sshd on 127.0.0.1 (see testserver.SSHD) whose
// SFTP sessions start in Home: relative paths resolve there.
type testServer struct {
	*testserver.SSHD
}

// startServer starts a server for t and stops it at t's end.
func startServer(t testing.TB) *testServer {
	t.Helper()
	return &testServer{testserver.StartSSHD(t, testserver.SSHDOptions{Home: "home"})}
}

func (srv *testServer) stop()                { srv.Stop() }
func (srv *testServer) restart(t testing.TB) { srv.Restart(t) }

// freeze stops every sshd process (SIGSTOP): connections stay open, but
// nothing answers. thaw resumes them.
func (srv *testServer) freeze() { srv.Signal(syscall.SIGSTOP) }
func (srv *testServer) thaw()   { srv.Signal(syscall.SIGCONT) }

// location returns a location on srv for the directory dir.
func (srv *testServer) location(dir string) Location {
	return Location{Host: "127.0.0.1", Port: srv.Port, Path: dir}
}

// options returns Options that trust srv and log in with its client key.
func (srv *testServer) options() Options {
	return Options{KnownHostsFile: srv.KnownHostsFile, IdentityFiles: []string{srv.IdentityFile}}
}

// fingerprint is the server's host key fingerprint.
func (srv *testServer) fingerprint() string { return ssh.FingerprintSHA256(srv.HostKey) }
