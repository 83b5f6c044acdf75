package version

import "testing"

func TestSemantic(t *testing.T) {
	defer func(v string) { Version = v }(Version)
	for _, c := range []struct {
		in                  string
		major, minor, patch uint32
	}{
		{"0.1.0", 0, 1, 0},
		{"v1.28.3", 1, 28, 3},
		{"2.0.1-rc.1+abc", 2, 0, 1},
		{"3.4", 3, 4, 0},
		{"dev", 0, 0, 0},
		{"", 0, 0, 0},
		{"1.x.7", 1, 0, 7},
	} {
		Version = c.in
		if a, b, p := Semantic(); a != c.major || b != c.minor || p != c.patch {
			t.Errorf("Semantic(%q) = %d.%d.%d, want %d.%d.%d", c.in, a, b, p, c.major, c.minor, c.patch)
		}
	}
}
