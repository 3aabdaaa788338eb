package source

import (
	"context"
	"io"
)

// streamChunk is the size of one read of a stream by StreamReader.
const streamChunk = 1 << 20

// StreamReader returns a reader of rd that returns ctx's cause as soon as
// ctx is cancelled, even while a Read of rd is blocked: an idle pipe
// (stdin of a dump that has not produced output yet) would otherwise keep a
// cancelled backup, and its lock, alive until the writer closes it. The
// reads of rd happen in a goroutine, at most two chunks ahead of the
// consumer; after a cancellation that goroutine is left to finish its
// blocked Read, which is why this is for streams a process reads once and
// then exits, not for files.
func StreamReader(ctx context.Context, rd io.Reader) io.Reader {
	s := &streamReader{ctx: ctx, ch: make(chan streamPiece, 1), free: make(chan []byte, 2)}
	s.free <- make([]byte, streamChunk)
	s.free <- make([]byte, streamChunk)
	go s.pump(rd)
	return s
}

type streamPiece struct {
	b   []byte
	err error
}

type streamReader struct {
	ctx  context.Context
	ch   chan streamPiece
	free chan []byte
	cur  []byte // unread rest of the current piece
	buf  []byte // the buffer cur lies in, returned to free when used up
	err  error  // sticky error once the pump finished
}

// pump reads rd until an error, handing over one chunk at a time.
func (s *streamReader) pump(rd io.Reader) {
	for {
		var b []byte
		select {
		case b = <-s.free:
		case <-s.ctx.Done():
			return
		}
		n, err := rd.Read(b)
		select {
		case s.ch <- streamPiece{b[:n], err}:
		case <-s.ctx.Done():
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *streamReader) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.buf != nil {
			s.free <- s.buf[:cap(s.buf)]
			s.buf = nil
		}
		if s.err != nil {
			return 0, s.err
		}
		if err := s.ctx.Err(); err != nil {
			return 0, context.Cause(s.ctx)
		}
		select {
		case piece := <-s.ch:
			s.cur, s.buf, s.err = piece.b, piece.b, piece.err
		case <-s.ctx.Done():
			return 0, context.Cause(s.ctx)
		}
		if len(s.cur) == 0 && s.err == nil {
			continue
		}
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}
