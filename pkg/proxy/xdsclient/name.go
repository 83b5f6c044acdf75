package xdsclient

import (
	"fmt"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// resourceName reads a state-of-the-world resource's name.
func resourceName(a *anypb.Any) (string, error) {
	m, err := a.UnmarshalNew()
	if err != nil {
		return "", fmt.Errorf("decoding %s: %w", a.GetTypeUrl(), err)
	}
	r, ok := m.(cachetypes.Resource)
	if !ok {
		return "", fmt.Errorf("%s: %w", a.GetTypeUrl(), errNoName)
	}
	name := cachev3.GetResourceName(r)
	if name == "" {
		return "", fmt.Errorf("%s: %w", a.GetTypeUrl(), errNoName)
	}
	return name, nil
}
