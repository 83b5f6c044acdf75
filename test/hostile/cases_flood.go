package hostile

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

func bombCases() []*Case {
	fields := func(n int, f func(i int) string) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			b.WriteString(f(i))
		}
		return b.String()
	}
	get := func(head string) func(context.Context, *Env) (string, error) {
		return raw("GET /{T} HTTP/1.1\r\n" + host + head + "\r\n")
	}
	tooLarge := []string{"431 close", "400 close"}
	clientIP := func(v string) bool { return strings.HasSuffix(strings.ReplaceAll(v, " ", ""), ",127.0.0.1") }
	cs := []*Case{
		{Name: "bomb-headers-99", Nginx: "200 keep, 1 fwd", What: "99 fields plus Host (at the 100-field limit)", Want: []string{okKeep}, Check: clean,
			Run: get(fields(99, func(i int) string { return fmt.Sprintf("X-F-%d: v\r\n", i) }))},
		{Name: "bomb-headers-150", Nginx: "200 keep, 1 fwd", What: "150 fields (over the 100-field limit)", Want: tooLarge,
			Run: get(fields(150, func(i int) string { return fmt.Sprintf("X-F-%d: v\r\n", i) }))},
		{Name: "bomb-headers-5000", Nginx: "400 close", What: "5,000 tiny fields (40 KB)", Want: tooLarge,
			Run: get(fields(5000, func(i int) string { return fmt.Sprintf("X%d:v\r\n", i) }))},
		{Name: "bomb-header-61k", Nginx: "400 close", What: "one 61 KiB field (over the 60 KiB head limit)", Want: tooLarge,
			Run: get("X-Big: " + strings.Repeat("a", 61<<10) + "\r\n")},
		{Name: "bomb-header-name-61k", Nginx: "400 close", What: "a 61 KiB field name", Want: tooLarge,
			Run: get("X" + strings.Repeat("a", 61<<10) + ": v\r\n")},
		{Name: "bomb-header-50k", Nginx: "400 close", What: "one 50 KiB field (under the 60 KiB limit)", Want: []string{okKeep}, Check: clean,
			Run: get("X-Big: " + strings.Repeat("a", 50<<10) + "\r\n")},
		{Name: "bomb-cookie-pairs", Nginx: "400 close", What: "one Cookie field with 3,000 pairs (~30 KB)", Want: []string{okKeep}, Check: clean,
			Run: get("Cookie: " + fields(3000, func(i int) string { return fmt.Sprintf("c%d=%d; ", i, i) }) + "z=1\r\n")},
		{Name: "bomb-cookie-fields", Nginx: "200 keep, 1 fwd", What: "90 Cookie fields", Want: []string{okKeep}, Check: clean,
			Run: get(fields(90, func(i int) string { return fmt.Sprintf("Cookie: c%d=%d\r\n", i, i) }))},
		{Name: "bomb-xff-fields", Nginx: "200 keep, 1 fwd", What: "90 X-Forwarded-For fields", Want: []string{okKeep},
			Check: all(clean, headerMatches("x-forwarded-for", "ending with the client address", clientIP)),
			Run:   get(fields(90, func(i int) string { return fmt.Sprintf("X-Forwarded-For: 10.0.%d.%d\r\n", i/256, i%256) }))},
		{Name: "bomb-xff-list", Nginx: "400 close", What: "one X-Forwarded-For with 4,000 addresses (~50 KB)", Want: []string{okKeep},
			Check: all(clean, headerMatches("x-forwarded-for", "ending with the client address", clientIP)),
			Run:   get("X-Forwarded-For: " + fields(4000, func(i int) string { return fmt.Sprintf("10.%d.%d.1,", i/256, i%256) }) + "10.0.0.1\r\n")},
		{Name: "bomb-connection-tokens", Nginx: "400 close", What: "Connection naming 4,000 fields (~50 KB)", Want: []string{okKeep},
			Check: all(clean, headerAbsent("x-tok-1", "x-tok-3999")),
			Run: get("Connection: " + fields(4000, func(i int) string { return fmt.Sprintf("x-tok-%d,", i) }) + "keep-alive\r\n" +
				"X-Tok-1: a\r\nX-Tok-3999: b\r\n")},
		{Name: "bomb-leading-crlf", Nginx: "200 keep, 1 fwd", What: "64 KiB of empty lines before the request line", Want: []string{okKeep, badClose, "- close"}, Check: clean,
			Run: raw(strings.Repeat("\r\n", 32<<10) + "GET /{T} HTTP/1.1\r\n" + host + "\r\n")},
	}
	for _, c := range cs {
		c.Category = "bomb"
	}
	return cs
}

// flood plays send on an h2c connection for at most d while a legitimate
// client makes requests on its own connection, then reports the flooding
// connection's state and whether the legitimate client was served
// throughout: "goaway(ENHANCE_YOUR_CALM), legit ok".
func flood(d time.Duration, reading bool, send func(c *h2client, env *Env, until time.Time) error) func(context.Context, *Env) (string, error) {
	return func(ctx context.Context, env *Env) (string, error) {
		c, err := dialH2Raw(ctx, env)
		if err != nil {
			return "", err
		}
		defer c.Close()
		if reading {
			c.startReader()
		}
		legitCtx, stopLegit := context.WithCancel(ctx)
		var legit string
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			legit = legitimate(legitCtx, env)
		}()
		err = send(c, env, time.Now().Add(d))
		if !reading {
			c.startReader()
		}
		stopLegit()
		wg.Wait()
		if err != nil && !isWriteAfterClose(err) && !isTimeout(err) {
			return "", err
		}
		state := c.connState(env.Wait)
		return state + ", " + legit, nil
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// legitimate makes requests one after another on a keep-alive connection
// until ctx ends, and at least one even if the flood was over at once (a
// proxy that cuts the attacker off within milliseconds): "legit ok" if
// every one got 200 within 2 s.
func legitimate(ctx context.Context, env *Env) string {
	ok, failed := 0, 0
	var nc net.Conn
	defer func() {
		if nc != nil {
			nc.Close()
		}
	}()
	for ctx.Err() == nil || ok+failed == 0 {
		if nc == nil {
			var err error
			if nc, err = net.DialTimeout("tcp", env.HTTP, 2*time.Second); err != nil {
				failed++
				time.Sleep(20 * time.Millisecond)
				continue
			}
		}
		out, err := h1{parts: []string{"GET " + env.Probe + "-legit HTTP/1.1\r\nHost: legit.example.com\r\n\r\n"}, noProbe: true,
			wait: func(*Env) time.Duration { return 2 * time.Second }}.runOn(nc, &Env{Wait: 2 * time.Second, Token: env.Token, Probe: env.Probe})
		if err == nil && out == "200 open" {
			ok++
		} else {
			failed++
			nc.Close()
			nc = nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	if failed == 0 && ok > 0 {
		return "legit ok"
	}
	return fmt.Sprintf("legit failed %d of %d", failed, ok+failed)
}

// Flood outcomes: the flooding connection may be cut off or not; the
// proxy must survive and keep serving others.
var survived = []string{"goaway(ENHANCE_YOUR_CALM), legit ok", "close, legit ok", "keep, legit ok",
	"goaway(PROTOCOL_ERROR), legit ok", "goaway(NO_ERROR), legit ok", "hang, legit ok"}

func withAnyForward(w []string) []string {
	out := make([]string, len(w))
	for i, s := range w {
		out[i] = s + ", *"
	}
	return out
}

func floodCases() []*Case {
	cs := []*Case{
		{Name: "h2-rapid-reset", Nginx: "goaway(NO_ERROR), legit ok, 5 fwd", What: "HEADERS then RST_STREAM, 20,000 times as fast as possible (CVE-2023-44487)", Want: withAnyForward(survived),
			Run: flood(3*time.Second, true, func(c *h2client, env *Env, until time.Time) error {
				blk := c.block(expandFields(req("GET", "/{T}/rr"), env)) // static: same bytes every time
				for i := 0; i < 20000 && time.Now().Before(until); i++ {
					id := uint32(2*i + 1)
					if err := c.write(func() error {
						if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndStream: true, EndHeaders: true}); err != nil {
							return err
						}
						return c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
					}); err != nil {
						return err
					}
				}
				return nil
			})},
		{Name: "h2-continuation-flood", Nginx: "goaway(PROTOCOL_ERROR), legit ok", What: "one HEADERS then endless CONTINUATION frames (32 MiB of fields)", Want: survived,
			Run: flood(3*time.Second, true, func(c *h2client, env *Env, until time.Time) error {
				blk := c.block(expandFields(req("GET", "/{T}"), env))
				if err := c.write(func() error {
					return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk})
				}); err != nil {
					return err
				}
				var frag []byte // literal fields without indexing: x-flood: aaaa…
				for len(frag) < 16000 {
					frag = append(frag, 0, 7)
					frag = append(frag, "x-flood"...)
					frag = append(frag, 100)
					frag = append(frag, strings.Repeat("a", 100)...)
				}
				for sent := 0; sent < 32<<20 && time.Now().Before(until); sent += len(frag) {
					if err := c.write(func() error { return c.fr.WriteContinuation(1, false, frag) }); err != nil {
						return err
					}
				}
				return nil
			})},
		{Name: "h2-continuation-empty-flood", Nginx: "goaway(PROTOCOL_ERROR), legit ok", What: "one HEADERS then endless empty CONTINUATION frames (no header bytes at all)",
			// Cut off, not merely survived: empty frames never reach the
			// header list limit, so only a bound on the frames read for one
			// header block stops them.
			Want: []string{"goaway(ENHANCE_YOUR_CALM), legit ok", "goaway(PROTOCOL_ERROR), legit ok", "close, legit ok"},
			Run: flood(3*time.Second, true, func(c *h2client, env *Env, until time.Time) error {
				blk := c.block(expandFields(req("GET", "/{T}"), env))
				if err := c.write(func() error {
					return c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: blk})
				}); err != nil {
					return err
				}
				empty := make([]byte, 9*1000) // 1,000 empty CONTINUATION frames per write
				for i := 0; i < len(empty); i += 9 {
					empty[i+3] = byte(http2.FrameContinuation)
					empty[i+8] = 1 // stream 1
				}
				for sent := 0; sent < 2000 && time.Now().Before(until); sent++ {
					if err := c.write(func() error { _, err := c.nc.Write(empty); return err }); err != nil {
						return err
					}
				}
				return nil
			})},
		{Name: "h2-settings-flood", Nginx: "goaway(NO_ERROR), legit ok", What: "200,000 SETTINGS frames, never reading the acknowledgements", Want: survived,
			Run: flood(3*time.Second, false, func(c *h2client, env *Env, until time.Time) error {
				for i := 0; i < 200000 && time.Now().Before(until); i++ {
					if err := c.write(func() error { return c.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}) }); err != nil {
						return err
					}
				}
				return nil
			})},
		{Name: "h2-ping-flood", Nginx: "goaway(NO_ERROR), legit ok", What: "200,000 PINGs, never reading the acknowledgements", Want: survived,
			Run: flood(3*time.Second, false, func(c *h2client, env *Env, until time.Time) error {
				for i := 0; i < 200000 && time.Now().Before(until); i++ {
					if err := c.write(func() error { return c.fr.WritePing(false, [8]byte{byte(i)}) }); err != nil {
						return err
					}
				}
				return nil
			})},
		{Name: "h2-reset-flood-window", Nginx: "goaway(NO_ERROR), legit ok", What: "streams opened and reset with WINDOW_UPDATEs in between, 3 s", Want: withAnyForward(survived),
			Run: flood(3*time.Second, true, func(c *h2client, env *Env, until time.Time) error {
				blk := c.block(expandFields(req("POST", "/{T}/wr"), env))
				for i := 0; i < 20000 && time.Now().Before(until); i++ {
					id := uint32(2*i + 1)
					if err := c.write(func() error {
						if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: blk, EndHeaders: true}); err != nil {
							return err
						}
						if err := c.fr.WriteWindowUpdate(id, 1000); err != nil {
							return err
						}
						return c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
					}); err != nil {
						return err
					}
				}
				return nil
			})},
	}
	for _, c := range cs {
		c.Category = "h2"
	}
	return cs
}
