package hostile

import (
	"fmt"
	"strings"

	"github.com/portico-gateway/portico/internal/testenv"
)

// Checks on what the backend received; they compose with all().

type check = func(*Env, []testenv.RecordedRequest) error

func all(checks ...check) check {
	return func(env *Env, reqs []testenv.RecordedRequest) error {
		for _, c := range checks {
			if err := c(env, reqs); err != nil {
				return err
			}
		}
		return nil
	}
}

// clean: nothing a strict backend would refuse (control bytes, both
// framing headers, several Host or Content-Length fields, obs-fold).
func clean(env *Env, reqs []testenv.RecordedRequest) error {
	for _, q := range reqs {
		if len(q.Flaws) > 0 {
			// Messages name the token {T}: they are compared across runs.
			line := strings.ReplaceAll(firstLine(q.Head), env.Token, "{T}")
			return fmt.Errorf("backend got %q: %s", line, strings.Join(q.Flaws, "; "))
		}
	}
	return nil
}

// methodIs: every forwarded request has this method.
func methodIs(m string) check {
	return func(env *Env, reqs []testenv.RecordedRequest) error {
		for _, q := range reqs {
			if q.Method != m {
				return fmt.Errorf("backend got method %q, want %q", q.Method, m)
			}
		}
		return nil
	}
}

// targetIs: every forwarded target is t ({T} expanded).
func targetIs(t string) check {
	return func(env *Env, reqs []testenv.RecordedRequest) error {
		for _, q := range reqs {
			if want := expand(t, env); q.Target != want {
				return fmt.Errorf("backend got target %q, want %q", strings.ReplaceAll(q.Target, env.Token, "{T}"), t)
			}
		}
		return nil
	}
}

func bodyIs(b string) check {
	return func(env *Env, reqs []testenv.RecordedRequest) error {
		for _, q := range reqs {
			if b := expand(b, env); string(q.Body) != b {
				return fmt.Errorf("backend got body %q, want %q", q.Body, b)
			}
		}
		return nil
	}
}

// headerIs: every forwarded request has exactly one field name with value v.
func headerIs(name, v string) check {
	return func(env *Env, reqs []testenv.RecordedRequest) error {
		for _, q := range reqs {
			if got := q.Values(name); len(got) != 1 || got[0] != v {
				return fmt.Errorf("backend got %s %q, want %q", name, got, v)
			}
		}
		return nil
	}
}

// headerMatches: every forwarded request has exactly one field name, and
// ok accepts its value.
func headerMatches(name, what string, ok func(string) bool) check {
	return func(env *Env, reqs []testenv.RecordedRequest) error {
		for _, q := range reqs {
			got := q.Values(name)
			if len(got) != 1 || !ok(got[0]) {
				return fmt.Errorf("backend got %s %q, want one field %s", name, got, what)
			}
		}
		return nil
	}
}

// headerAbsent: no forwarded request carries any field named like this
// (a trailing '*' matches a prefix).
func headerAbsent(names ...string) check {
	return func(env *Env, reqs []testenv.RecordedRequest) error {
		for _, q := range reqs {
			for _, f := range q.Header {
				for _, n := range names {
					if strings.EqualFold(f[0], n) || strings.HasSuffix(n, "*") && strings.HasPrefix(strings.ToLower(f[0]), n[:len(n)-1]) {
						return fmt.Errorf("backend got %s: %q", f[0], f[1])
					}
				}
			}
		}
		return nil
	}
}

func firstLine(b []byte) string {
	s := string(b)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.TrimRight(s, "\r")
}
