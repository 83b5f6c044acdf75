package tls

import cryptotls "crypto/tls"

// envoyCiphers maps the OpenSSL-style cipher names Envoy and Istio use to
// IANA names.
var envoyCiphers = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-ECDSA-AES128-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
	"ECDHE-RSA-AES128-SHA":          "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
	"ECDHE-ECDSA-AES256-SHA":        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
	"ECDHE-RSA-AES256-SHA":          "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
	"AES128-GCM-SHA256":             "TLS_RSA_WITH_AES_128_GCM_SHA256",
	"AES256-GCM-SHA384":             "TLS_RSA_WITH_AES_256_GCM_SHA384",
	"AES128-SHA":                    "TLS_RSA_WITH_AES_128_CBC_SHA",
	"AES256-SHA":                    "TLS_RSA_WITH_AES_256_CBC_SHA",
}

// equivalence groups ("[A|B]") that BoringSSL accepts.
var envoyGroups = map[string][]string{
	"[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-ECDSA-CHACHA20-POLY1305]": {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
	"[ECDHE-RSA-AES128-GCM-SHA256|ECDHE-RSA-CHACHA20-POLY1305]":     {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
}

// KnownCipherSuite reports whether Envoy accepts a cipher suite name.
func KnownCipherSuite(name string) bool {
	_, ok := envoyCiphers[name]
	_, group := envoyGroups[name]
	return ok || group
}

// CipherSuiteIDs maps Envoy cipher names (and IANA names) to Go's IDs.
func CipherSuiteIDs(names []string) ([]uint16, []string) {
	byName := map[string]uint16{}
	for _, c := range append(cryptotls.CipherSuites(), cryptotls.InsecureCipherSuites()...) {
		byName[c.Name] = c.ID
	}
	var ids []uint16
	var unknown []string
	for _, n := range names {
		expanded := []string{n}
		if g, ok := envoyGroups[n]; ok {
			expanded = g
		}
		for _, e := range expanded {
			iana := e
			if v, ok := envoyCiphers[e]; ok {
				iana = v
			}
			if id, ok := byName[iana]; ok {
				ids = append(ids, id)
			} else {
				unknown = append(unknown, n)
			}
		}
	}
	return ids, unknown
}
