package hostname

import "testing"

func TestIntersect(t *testing.T) {
	tests := []struct {
		a, b, want string
		ok         bool
	}{
		{"*", "*", "*", true},
		{"*", "a.example.com", "a.example.com", true},
		{"a.example.com", "*", "a.example.com", true},
		{"a.example.com", "a.example.com", "a.example.com", true},
		{"a.example.com", "*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", "a.b.example.com", true},
		{"example.com", "*.example.com", "", false},
		{"*.b.example.com", "*.example.com", "*.b.example.com", true},
		{"*.example.com", "*.b.example.com", "*.b.example.com", true},
		{"*.example.org", "*.example.com", "", false},
		{"a.example.org", "*.example.com", "", false},
		{"a.example.com", "b.example.com", "", false},
		{"xexample.com", "*.example.com", "", false},
	}
	for _, tc := range tests {
		got, ok := Intersect(tc.a, tc.b)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Intersect(%q, %q) = %q, %v; want %q, %v", tc.a, tc.b, got, ok, tc.want, tc.ok)
		}
		// Symmetric: the meeting point does not depend on the order.
		if got2, ok2 := Intersect(tc.b, tc.a); got2 != got || ok2 != ok {
			t.Errorf("Intersect(%q, %q) = %q, %v; the other order gave %q, %v", tc.b, tc.a, got2, ok2, got, ok)
		}
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		pattern, host string
		want          bool
	}{
		{"*", "anything.example.com", true},
		{"*", "*.example.com", true},
		{"a.example.com", "a.example.com", true},
		{"a.example.com", "b.example.com", false},
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", "*.b.example.com", true},
		{"*.b.example.com", "*.example.com", false},
		{"a.example.com", "*.example.com", false},
		{"*.example.com", "*", false},
	}
	for _, tc := range tests {
		if got := Covers(tc.pattern, tc.host); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.pattern, tc.host, got, tc.want)
		}
	}
}
