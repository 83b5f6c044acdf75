package resource_test

import (
	"testing"

	"github.com/portico-gateway/portico/pkg/resource"
)

// TestQuickSetLeavesTwiceNamedFieldsToThePlainWay covers what random
// mutations rarely make: a field given under both of its names, two
// members of a oneof, and durations and wrappers at their edges. Map
// order is random, so each document is decoded several times.
func TestQuickSetLeavesTwiceNamedFieldsToThePlainWay(t *testing.T) {
	const head = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a, namespace: default}\nspec:\n  hosts: [a.example.com]\n  http:\n  - route:\n    - destination: {host: a}\n"
	const drHead = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a, namespace: default}\nspec:\n  host: a\n  trafficPolicy:\n"
	docs := map[string]string{
		"both names":         head + "    retries: {attempts: 3, retryOn: 5xx, retry_on: gateway-error}\n",
		"both names, nested": head + "    corsPolicy: {allowOrigins: [{exact: a}], allow_origins: [{prefix: b}]}\n",
		"oneof twice":        head + "    match: [{uri: {exact: /a, prefix: /b}}]\n",
		"oneof, one null":    head + "    match: [{uri: {exact: /a, prefix: null}}]\n",
		"durations":          head + "    timeout: 1h30m\n    retries: {attempts: 2, perTryTimeout: 250ms}\n",
		"tiny duration":      head + "    timeout: 1ns\n",
		"huge duration":      head + "    timeout: 2562047h\n",
		"fraction duration":  head + "    timeout: 1.5s\n",
		"bad duration":       head + "    timeout: 5 parsecs\n",
		"uint32 wrapper":     drHead + "    outlierDetection: {consecutive5xxErrors: 7, consecutiveGatewayErrors: 1e2, interval: 10s}\n",
		"wrapper too big":    drHead + "    outlierDetection: {consecutive5xxErrors: 99999999999}\n",
		"bool wrapper":       drHead + "    outlierDetection: {splitExternalLocalOriginErrors: true, consecutiveLocalOriginFailures: 3}\n",
		"wrapper of a list":  drHead + "    outlierDetection: {consecutive5xxErrors: [1]}\n",
	}
	for name, doc := range docs {
		plain := outcome(resource.DecodeDocumentPlain([]byte(doc)))
		for range 20 {
			if fast := outcome(resource.DecodeDocument([]byte(doc))); fast != plain {
				t.Fatalf("%s: decoding differs\ndocument:\n%s\nfast:\n%s\nplain:\n%s", name, doc, fast, plain)
			}
		}
	}
}
