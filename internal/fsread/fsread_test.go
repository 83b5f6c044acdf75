package fsread

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
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
