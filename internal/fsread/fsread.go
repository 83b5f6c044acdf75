// Package fsread reads configuration files that someone else controls
// without trusting what they are: only regular files (after following
// symlinks) are read, never FIFOs, devices or sockets, whose reads can
// block forever (a FIFO nobody writes to) or never end (/dev/zero); and a
// file larger than a limit is refused instead of read into memory.
package fsread

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"syscall"
	"time"
)

// ErrNotRegular is returned for anything that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// ErrTooLarge is returned for a file over the size limit.
var ErrTooLarge = errors.New("file too large")

// Describe names a file mode's type for messages: "a FIFO", "a device", …
func Describe(m fs.FileMode) string {
	switch {
	case m.IsRegular():
		return "a regular file"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO (named pipe)"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeCharDevice != 0:
		return "a character device"
	case m&fs.ModeDevice != 0:
		return "a block device"
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "not a regular file"
}

// Check reports whether path (after symlinks) is a regular file of at
// most max bytes, without opening it.
func Check(path string, max int64) (fs.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	return fi, checkInfo(fi, max)
}

func checkInfo(fi fs.FileInfo, max int64) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: it is %s", ErrNotRegular, Describe(fi.Mode()))
	}
	if fi.Size() > max {
		return fmt.Errorf("%w: %d bytes, over the limit of %d", ErrTooLarge, fi.Size(), max)
	}
	return nil
}

// Regular reads path if it is a regular file of at most max bytes. The
// file is opened without blocking (a FIFO swapped in between the check
// and the open cannot wedge the caller), checked again on the open
// descriptor, and read through a limit (a file that grows while it is
// read is cut off and refused).
func Regular(path string, max int64) ([]byte, error) {
	if _, err := Check(path, max); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkInfo(fi, max); err != nil {
		return nil, err
	}
	b, err := readAll(io.LimitReader(f, max+1), min(fi.Size(), max)+1)
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: it grew past the limit of %d bytes while being read", ErrTooLarge, max)
	}
	return b, nil
}

// readAll is io.ReadAll into a buffer sized for the file (one byte more,
// to read its end without growing): io.ReadAll starts at 512 bytes and
// grows by appending, which for a cold start of 5,000 files of ~2 KB
// was 24 MB of garbage, twice what was read.
func readAll(r io.Reader, size int64) ([]byte, error) {
	b := make([]byte, 0, max(size, 512))
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // grew while being read
		}
	}
}

// Cached is a small file read with Regular and read again only when its
// size or modification time changes: credentials the kubelet rotates by
// replacing the file (projected tokens, CA bundles), read on every use
// without a read per use. Safe for concurrent use.
type Cached struct {
	Path string
	Max  int64

	mu   sync.Mutex
	mod  time.Time
	size int64
	data []byte
}

// Read returns the file's content as of its last change.
func (c *Cached) Read() ([]byte, error) {
	fi, err := Check(c.Path, c.Max)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.data != nil && fi.ModTime().Equal(c.mod) && fi.Size() == c.size {
		return c.data, nil
	}
	b, err := Regular(c.Path, c.Max)
	if err != nil {
		return nil, err
	}
	c.data, c.mod, c.size = b, fi.ModTime(), fi.Size()
	return b, nil
}
