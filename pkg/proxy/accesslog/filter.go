package accesslog

import (
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"
	"github.com/google/cel-go/common/types/traits"
	"github.com/google/cel-go/interpreter"
)

// CELFilterName is Envoy's name for the CEL access log filter
// (envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter), which
// istiod emits for a Telemetry resource's accessLogging[].filter.
const CELFilterName = "envoy.access_loggers.extension_filters.cel"

// Limits on filter expressions: istiod passes them through unchecked, so
// the proxy bounds what it compiles and what one evaluation may cost (a
// filter runs once per logged request).
const (
	MaxFilterLength    = 4096
	maxFilterRecursion = 32
	// maxFilterCost is cel-go's runtime cost units per evaluation; the
	// common filters cost under 10.
	maxFilterCost = 1000
)

// Filter is a compiled CEL access log filter over Envoy's attribute names
// (https://www.envoyproxy.io/docs/envoy/latest/intro/arch_overview/advanced/attributes):
// an entry is logged only when the expression is true. As in Envoy, an
// evaluation error (a missing key, a type mismatch) does not log.
//
// cel-go (the implementation Envoy and Kubernetes use) compiles and runs
// the expressions; the attributes are the access log entry's fields.
type Filter struct {
	Expr string
	prg  cel.Program
}

// filterEnv declares Envoy's attribute roots. They are maps of dynamic
// values: a key the proxy does not know is an evaluation error (no
// entry), as in Envoy for an attribute that is absent.
var filterEnv = func() *cel.Env {
	mapType := cel.MapType(cel.StringType, cel.DynType)
	env, err := cel.NewEnv(
		cel.Variable("request", mapType),
		cel.Variable("response", mapType),
		cel.Variable("connection", mapType),
		cel.Variable("upstream", mapType),
		cel.Variable("source", mapType),
		cel.Variable("destination", mapType),
		cel.Variable("xds", mapType),
		cel.ParserRecursionLimit(maxFilterRecursion),
		cel.ParserExpressionSizeLimit(MaxFilterLength),
	)
	if err != nil {
		panic(fmt.Sprintf("access log filter environment: %v", err)) // static declarations
	}
	return env
}()

// CompileFilter compiles a CEL expression. Errors name what is wrong,
// for the listener's NACK.
func CompileFilter(expr string) (*Filter, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, errors.New("CEL filter: expression is empty")
	}
	if len(expr) > MaxFilterLength {
		return nil, fmt.Errorf("CEL filter: expression is %d bytes, more than %d", len(expr), MaxFilterLength)
	}
	ast, iss := filterEnv.Compile(expr)
	if iss.Err() != nil {
		return nil, fmt.Errorf("CEL filter %q: %w", expr, iss.Err())
	}
	if t := ast.OutputType(); !t.IsExactType(types.BoolType) && !t.IsExactType(types.DynType) {
		return nil, fmt.Errorf("CEL filter %q: evaluates to %s, not bool", expr, t)
	}
	prg, err := filterEnv.Program(ast, cel.CostLimit(maxFilterCost), cel.EvalOptions(cel.OptOptimize))
	if err != nil {
		return nil, fmt.Errorf("CEL filter %q: %w", expr, err)
	}
	return &Filter{Expr: expr, prg: prg}, nil
}

// Match reports whether e is to be logged.
func (f *Filter) Match(e *Entry) bool {
	out, _, err := f.prg.Eval(&attributes{e: e})
	if err != nil {
		return false
	}
	b, ok := out.Value().(bool)
	return ok && b
}

// attributes resolves Envoy's attribute roots from an entry. Each root is
// a lazy map: only the keys an expression reads are computed, so an
// evaluation allocates little.
type attributes struct{ e *Entry }

func (a *attributes) Parent() interpreter.Activation { return nil }

// Attribute roots.
const (
	rootRequest = iota
	rootResponse
	rootConnection
	rootUpstream
	rootSource
	rootDestination
	rootXDS
)

var roots = map[string]int{"request": rootRequest, "response": rootResponse, "connection": rootConnection,
	"upstream": rootUpstream, "source": rootSource, "destination": rootDestination, "xds": rootXDS}

func (a *attributes) ResolveName(name string) (any, bool) {
	r, ok := roots[name]
	if !ok || (r == rootRequest && a.e.TCP) {
		return nil, false
	}
	return attrMap{e: a.e, root: r}, true
}

// attrMap is one attribute root of an entry.
type attrMap struct {
	e    *Entry
	root int
}

func (m attrMap) find(key string) (any, bool) {
	e := m.e
	switch m.root {
	case rootRequest:
		switch key {
		case "method":
			return e.Method, true
		case "host":
			return e.Authority, true
		case "scheme":
			return e.Scheme, true
		case "protocol":
			return e.Protocol, true
		case "id":
			return e.RequestID, true
		case "useragent":
			return e.UserAgent, true
		case "time":
			return e.Start, true
		case "duration":
			return e.Duration, true
		case "size", "total_size":
			return e.BytesReceived, true
		case "path":
			return e.Path, true
		case "url_path":
			p := e.Path
			if i := strings.IndexAny(p, "?#"); i >= 0 {
				p = p[:i]
			}
			return p, true
		case "headers":
			if e.ReqHeaders != nil {
				return headerMap{e.ReqHeaders}, true
			}
		case "referer":
			if e.ReqHeaders != nil {
				if r := e.ReqHeaders.Get("referer"); r != "" {
					return r, true
				}
			}
		}
	case rootResponse:
		switch key {
		case "flags":
			return uint64(e.Flags), true
		case "size", "total_size":
			return e.BytesSent, true
		case "code":
			if !e.TCP {
				return int64(e.Code), true
			}
		case "code_details":
			if !e.TCP {
				return e.ResponseCodeDetails, true
			}
		}
	case rootConnection:
		switch key {
		case "requested_server_name":
			return e.SNI, true
		case "mtls":
			return false, true
		}
	case rootUpstream:
		return addrAttr(e.UpstreamHost, key)
	case rootSource:
		return addrAttr(e.DownstreamRemote, key)
	case rootDestination:
		return addrAttr(e.DownstreamLocal, key)
	case rootXDS:
		switch key {
		case "cluster_name":
			return e.Cluster, true
		case "route_name":
			return e.RouteName, true
		}
	}
	return nil, false
}

// addrAttr is Envoy's address or port attribute of "host:port".
func addrAttr(hostPort, key string) (any, bool) {
	switch key {
	case "address":
		return hostPort, true
	case "port":
		i := strings.LastIndexByte(hostPort, ':')
		if i < 0 || i == len(hostPort)-1 {
			return nil, false
		}
		var port int64
		for _, c := range hostPort[i+1:] {
			if c < '0' || c > '9' {
				return nil, false
			}
			port = port*10 + int64(c-'0')
		}
		return port, true
	}
	return nil, false
}

func (m attrMap) ConvertToNative(reflect.Type) (any, error) {
	return nil, errors.New("an attribute map cannot be converted")
}
func (m attrMap) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return types.MapType
	}
	return types.NewErr("an attribute map cannot be converted to %s", t)
}
func (m attrMap) Equal(ref.Val) ref.Val { return types.Bool(false) }
func (m attrMap) Type() ref.Type        { return types.MapType }
func (m attrMap) Value() any            { return m.e }

// Get is root[key]; a key the entry does not have is an error (not logged).
func (m attrMap) Get(index ref.Val) ref.Val {
	s, ok := index.Value().(string)
	if !ok {
		return types.NewErr("no such key: %v", index.Value())
	}
	v, ok := m.find(s)
	if !ok {
		return types.NewErr("no such key: %s", s)
	}
	return types.DefaultTypeAdapter.NativeToValue(v)
}

// Contains is `key in root`.
func (m attrMap) Contains(index ref.Val) ref.Val {
	s, ok := index.Value().(string)
	if !ok {
		return types.False
	}
	_, ok = m.find(s)
	return types.Bool(ok)
}

// headerMap is request.headers: a map keyed by lower-case name, read
// through the request's own header block (no copy per evaluation).
type headerMap struct{ h HeaderGetter }

func (m headerMap) ConvertToNative(reflect.Type) (any, error) {
	return nil, errors.New("request.headers cannot be converted")
}
func (m headerMap) ConvertToType(t ref.Type) ref.Val {
	if t == types.TypeType {
		return types.MapType
	}
	return types.NewErr("request.headers cannot be converted to %s", t)
}
func (m headerMap) Equal(other ref.Val) ref.Val { return types.Bool(false) }
func (m headerMap) Type() ref.Type              { return types.MapType }
func (m headerMap) Value() any                  { return m.h }

// Get is headers[name]: a missing header is an error, as in Envoy
// (use `'x' in request.headers` to test presence).
func (m headerMap) Get(index ref.Val) ref.Val {
	v, ok := m.Find(index)
	if !ok {
		return types.NewErr("no such key: %v", index.Value())
	}
	return v
}

// Contains is `name in request.headers`.
func (m headerMap) Contains(index ref.Val) ref.Val {
	_, ok := m.Find(index)
	return types.Bool(ok)
}

// Find looks a header up by name.
func (m headerMap) Find(index ref.Val) (ref.Val, bool) {
	s, ok := index.Value().(string)
	if !ok {
		return nil, false
	}
	v := m.h.Get(s)
	if v == "" {
		return nil, false
	}
	return types.String(v), true
}

var (
	_ traits.Indexer   = attrMap{}
	_ traits.Container = attrMap{}
	_ ref.Val          = headerMap{}
	_ traits.Indexer   = headerMap{}
	_ traits.Container = headerMap{}
)
