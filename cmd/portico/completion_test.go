package main

import (
	"bytes"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func completions(words []string) []string {
	var out bytes.Buffer
	pods := func(kf *kubeFlags, all bool) ([]string, error) {
		if all {
			return []string{"gw-1.istio-system", "gw-2.other"}, nil
		}
		if kf.namespace == "other" {
			return []string{"gw-2"}, nil
		}
		return []string{"gw-1", "backend-7"}, nil
	}
	namespaces := func(*kubeFlags) ([]string, error) { return []string{"default", "istio-system"}, nil }
	complete(words, &out, pods, namespaces)
	return strings.Fields(out.String())
}

func TestComplete(t *testing.T) {
	for _, tc := range []struct {
		words []string
		want  string
	}{
		{[]string{""}, "analyze completion help proxy-config proxy-status translate version"},
		{[]string{"pro"}, "proxy-config proxy-status"},
		{[]string{"pc", ""}, "listeners routes clusters endpoints secrets bootstrap all"},
		{[]string{"proxy-config", "cl"}, "clusters"},
		{[]string{"pc", "clusters", ""}, "backend-7 gw-1"},
		{[]string{"pc", "clusters", "-n", "other", "g"}, "gw-2"},
		{[]string{"pc", "clusters", "--namespace=other", ""}, "gw-2"},
		{[]string{"pc", "clusters", "gw-1.", ""}, ""}, // one pod only
		{[]string{"ps", "gw-1."}, "gw-1.istio-system"},
		{[]string{"pc", "routes", "gw-1", "-o", ""}, "json short table text yaml"},
		{[]string{"pc", "routes", "-n", ""}, "default istio-system"},
		{[]string{"pc", "routes", "--port", ""}, ""},
		{[]string{"analyze", "--fail"}, "--failure-threshold"},
		{[]string{"analyze", "--failure-threshold", "W"}, "Warning"},
		{[]string{"completion", ""}, "bash fish zsh"},
		{[]string{"nonsense", ""}, ""},
	} {
		got := strings.Join(completions(tc.words), " ")
		want := tc.want
		if tc.words[0] == "pc" && len(tc.words) == 2 {
			want = strings.Join(sortedCopy(strings.Fields(want)), " ")
		}
		if got != want {
			t.Errorf("complete %q = %q, want %q", tc.words, got, want)
		}
	}
}

func sortedCopy(s []string) []string {
	out := append([]string(nil), s...)
	for i := range out {
		for j := i + 1; j < len(out); j++ {
			if out[j] < out[i] {
				out[i], out[j] = out[j], out[i]
			}
		}
	}
	return out
}

// TestCompletionFlagsDefined: every flag completion offers is one its
// command accepts (the list cannot drift into offering flags that fail).
func TestCompletionFlagsDefined(t *testing.T) {
	for _, c := range commands() {
		flags, ok := commandFlags[c.name]
		if !ok {
			t.Errorf("command %s has no completion entry", c.name)
			continue
		}
		for _, f := range flags {
			_, errOut, _ := cli(t, c.name, f+"=x")
			_, errOut2, _ := cli(t, c.name, f)
			if strings.Contains(errOut, "not defined") && strings.Contains(errOut2, "not defined") {
				t.Errorf("%s %s: completion offers a flag the command does not define: %s", c.name, f, errOut)
			}
		}
	}
	if _, errOut, _ := cli(t, "proxy-config", "--no-such-flag"); !strings.Contains(errOut, "flag provided but not defined") {
		t.Errorf("the check above relies on the flag package's wording: %q", errOut)
	}
}

// TestCompletionScripts: each script is valid for its shell (parsed by
// the shell when it is installed) and calls back into __complete.
func TestCompletionScripts(t *testing.T) {
	for shell, check := range map[string][]string{"bash": {"bash", "-n"}, "zsh": {"zsh", "-n"}, "fish": {"fish", "--no-execute"}} {
		out, errOut, code := cli(t, "completion", shell)
		if code != 0 || !strings.Contains(out, "portico __complete") {
			t.Errorf("completion %s: exit %d %s\n%s", shell, code, errOut, out)
			continue
		}
		bin, err := exec.LookPath(check[0])
		if err != nil {
			t.Logf("%s is not installed: its script is not syntax-checked", shell)
			continue
		}
		p := filepath.Join(t.TempDir(), "portico."+shell)
		if err := os.WriteFile(p, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
		if b, err := exec.Command(bin, append(check[1:], p)...).CombinedOutput(); err != nil {
			t.Errorf("%s rejects its completion script: %v\n%s", shell, err, b)
		}
	}
	if _, errOut, code := cli(t, "completion", "powershell"); code != 1 || !strings.Contains(errOut, "want bash, zsh or fish") {
		t.Errorf("unknown shell: exit %d %q", code, errOut)
	}
}

// TestBashCompletionEndToEnd drives the bash script as bash would on TAB:
// COMP_WORDS/COMP_CWORD in, COMPREPLY out, through the built binary.
func TestBashCompletionEndToEnd(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "portico"), ".")
	if b, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building portico: %v\n%s", err, b)
	}
	script, _, _ := cli(t, "completion", "bash")
	prog := script + `
COMP_WORDS=(portico pc cl); COMP_CWORD=2; _portico; echo "${COMPREPLY[@]}"
COMP_WORDS=(portico proxy-status --controller 127.0.0.1:1 -o ""); COMP_CWORD=5; _portico; echo "${COMPREPLY[@]}"
`
	cmd := exec.Command(bash, "-c", prog)
	cmd.Env = append(os.Environ(), "PATH="+dir+":"+os.Getenv("PATH"), "KUBECONFIG="+filepath.Join(dir, "none"))
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, b)
	}
	if got := strings.Split(strings.TrimSpace(string(b)), "\n"); len(got) != 2 || got[0] != "clusters" || got[1] != "json short table text yaml" {
		t.Errorf("COMPREPLY: %q", got)
	}
}

// TestInterspersedFlags: flags after positional arguments, kubectl's way.
func TestInterspersedFlags(t *testing.T) {
	fl := flag.NewFlagSet("x", flag.ContinueOnError)
	n := fl.String("n", "", "")
	port := fl.Int("port", 0, "")
	pos, err := interspersed(fl, []string{"clusters", "gw-1", "-n", "istio-system", "--port", "80", "--", "-literal", "-x"})
	if err != nil || strings.Join(pos, " ") != "clusters gw-1 -literal -x" || *n != "istio-system" || *port != 80 {
		t.Errorf("pos %q n %q port %d err %v", pos, *n, *port, err)
	}
}

// TestCommandHelp: -h prints a command's flags and exits 0.
func TestCommandHelp(t *testing.T) {
	for _, c := range commands() {
		if c.name == "completion" {
			continue
		}
		out, errOut, code := cli(t, c.name, "-h")
		if code != 0 || !strings.HasPrefix(out, "Flags of portico "+c.name+":") || errOut != "" {
			t.Errorf("%s -h: exit %d %q\n%s", c.name, code, errOut, out)
		}
	}
	if out, _, _ := cli(t, "pc", "clusters", "--help"); !strings.Contains(out, "-proxy-admin-port") {
		t.Errorf("pc --help lacks its flags:\n%s", out)
	}
}
