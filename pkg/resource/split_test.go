package resource

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// splitDocumentsScanner is how SplitDocuments used to work (a
// bufio.Scanner and a copy of every document), kept to check the
// allocation-free version against.
func splitDocumentsScanner(data []byte) []Document {
	var docs []Document
	var cur bytes.Buffer
	start, line, index := 1, 0, 0
	flush := func() {
		if hasContent(cur.Bytes()) {
			docs = append(docs, Document{Index: index, Line: start, Data: append([]byte(nil), cur.Bytes()...)})
		}
		index++
		cur.Reset()
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64*1024), 16*1024*1024)
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.HasPrefix(text, "---") && strings.TrimSpace(strings.TrimPrefix(text, "---")) == "" || strings.HasPrefix(text, "--- #") {
			if line > 1 || cur.Len() > 0 {
				flush()
			}
			start = line + 1
			continue
		}
		cur.WriteString(text)
		cur.WriteByte('\n')
	}
	flush()
	return docs
}

// TestSplitDocumentsEqualsScanner compares SplitDocuments with the
// scanner-based splitting on random streams of separators (with
// comments, trailing blanks, CRLF line ends), comments, blank lines and
// content, with and without a final newline.
func TestSplitDocumentsEqualsScanner(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	pieces := []string{"---", "--- ", "---\t", "--- # c", "---x", "----", " ---", "# comment", "", "  ", "a: 1", "b: [x]", "  - c", "\r", "key: v\r", "---\r", "--- #\r"}
	for i := range 20000 {
		var b strings.Builder
		for range rng.IntN(12) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
			if rng.IntN(6) > 0 {
				b.WriteString("\n")
			} else {
				b.WriteString("\r\n")
			}
		}
		s := b.String()
		if rng.IntN(3) == 0 {
			s = strings.TrimSuffix(s, "\n")
		}
		in := []byte(s)
		got, want := SplitDocuments(in), splitDocumentsScanner([]byte(s))
		if len(got) == 0 && len(want) == 0 {
			continue
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("case %d %q:\ngot  %+v\nwant %+v", i, s, got, want)
		}
		for _, d := range got {
			_ = append(d.Data, "appended"...)
		}
		if string(in) != s {
			// A document that is a slice of the input must not let an
			// append write into what follows it.
			t.Fatalf("case %d %q: appending to a document changed the input to %q", i, s, in)
		}
	}
}
