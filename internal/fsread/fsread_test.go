package fsread

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/iotest"
	"time"
)

func TestRegularRefusesWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	regular := filepath.Join(dir, "ok.yaml")
	os.WriteFile(regular, []byte("kind: x\n"), 0o644)
	fifo := filepath.Join(dir, "fifo.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.yaml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "sock.yaml")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	big := filepath.Join(dir, "big.yaml")
	os.WriteFile(big, make([]byte, 2048), 0o644)
	toRegular := filepath.Join(dir, "link.yaml")
	os.Symlink(regular, toRegular)

	cases := []struct {
		name, path string
		want       error
		says       string
	}{
		{"regular", regular, nil, ""},
		{"symlink to a regular file", toRegular, nil, ""},
		{"FIFO", fifo, ErrNotRegular, "FIFO"},
		{"symlink to /dev/zero", zero, ErrNotRegular, "character device"},
		{"socket", sock, ErrNotRegular, "socket"},
		{"directory", dir, ErrNotRegular, "directory"},
		{"over the limit", big, ErrTooLarge, "2048 bytes"},
	}
	for _, c := range cases {
		done := make(chan struct{})
		var b []byte
		var err error
		go func() { b, err = Regular(c.path, 1024); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Regular blocked", c.name)
		}
		switch {
		case c.want == nil && (err != nil || string(b) != "kind: x\n"):
			t.Errorf("%s: %q, %v", c.name, b, err)
		case c.want != nil && (!errors.Is(err, c.want) || !strings.Contains(err.Error(), c.says)):
			t.Errorf("%s: got %v, want %v saying %q", c.name, err, c.want, c.says)
		}
	}
}

// TestReadAllWhateverTheSizeHint: the buffer is sized from the file's
// size when it was opened, but a file may have grown or shrunk since, or
// report no size at all (/proc): what is read is all of it either way,
// and a read error is returned.
func TestReadAllWhateverTheSizeHint(t *testing.T) {
	data := strings.Repeat("0123456789", 300)
	for _, hint := range []int64{0, 1, 511, 512, 513, 2999, 3000, 3001, 10000} {
		// One byte at a time too: short reads must not end the loop.
		for _, r := range []io.Reader{strings.NewReader(data), iotest.OneByteReader(strings.NewReader(data))} {
			got, err := readAll(r, hint)
			if err != nil || string(got) != data {
				t.Fatalf("hint %d: read %d bytes (%v), want %d", hint, len(got), err, len(data))
			}
		}
	}
	boom := errors.New("boom")
	if _, err := readAll(iotest.ErrReader(boom), 100); !errors.Is(err, boom) {
		t.Errorf("read error = %v, want %v", err, boom)
	}
}
