package configdump

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
)

// ParseQuery reads Envoy's /config_dump query parameters: resource,
// name_regex and include_eds (mask is refused rather than ignored).
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Resource: v.Get("resource"), IncludeEDS: v.Has("include_eds")}
	if re := v.Get("name_regex"); re != "" {
		var err error
		if q.NameRegex, err = regexp.Compile(re); err != nil {
			return q, fmt.Errorf("invalid name_regex: %w", err)
		}
	}
	if v.Has("mask") {
		return q, errors.New("mask is not supported")
	}
	return q, nil
}

// Serve answers a /config_dump request for in, as Envoy's admin does.
func Serve(w http.ResponseWriter, r *http.Request, in Input) {
	q, err := ParseQuery(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cd, err := Build(in, q)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b, err := Marshal(cd)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}
