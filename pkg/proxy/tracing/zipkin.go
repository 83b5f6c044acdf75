package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// zipkinExporter posts spans to a Zipkin collector's v2 JSON API
// (Envoy's collector_endpoint_version HTTP_JSON).
type zipkinExporter struct {
	client  *http.Client
	url     string
	service string
}

type zipkinEndpoint struct {
	ServiceName string `json:"serviceName,omitempty"`
}

type zipkinSpan struct {
	TraceID       string            `json:"traceId"`
	ID            string            `json:"id"`
	ParentID      string            `json:"parentId,omitempty"`
	Name          string            `json:"name"`
	Kind          string            `json:"kind,omitempty"`
	Timestamp     int64             `json:"timestamp"`
	Duration      int64             `json:"duration"`
	Shared        bool              `json:"shared,omitempty"`
	LocalEndpoint *zipkinEndpoint   `json:"localEndpoint,omitempty"`
	Tags          map[string]string `json:"tags,omitempty"`
}

func (z *zipkinExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	out := make([]zipkinSpan, 0, len(spans))
	for _, s := range spans {
		sc := s.SpanContext()
		zs := zipkinSpan{TraceID: sc.TraceID().String(), ID: sc.SpanID().String(), Name: s.Name(),
			Timestamp: s.StartTime().UnixMicro(), Duration: max(1, s.EndTime().Sub(s.StartTime()).Microseconds()),
			LocalEndpoint: &zipkinEndpoint{ServiceName: z.service}}
		if p := s.Parent(); p.IsValid() {
			zs.ParentID = p.SpanID().String()
		}
		switch s.SpanKind() {
		case trace.SpanKindServer:
			zs.Kind = "SERVER"
		case trace.SpanKindClient:
			zs.Kind = "CLIENT"
		}
		if attrs := s.Attributes(); len(attrs) > 0 {
			zs.Tags = make(map[string]string, len(attrs))
			for _, a := range attrs {
				zs.Tags[string(a.Key)] = attrString(a)
			}
		}
		out = append(out, zs)
	}
	body, err := json.Marshal(out)
	if err != nil {
		return fmt.Errorf("encoding zipkin spans: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, z.url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("posting zipkin spans: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := z.client.Do(req)
	if err != nil {
		return fmt.Errorf("posting zipkin spans to %s: %w", z.url, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("posting zipkin spans to %s: status %d", z.url, resp.StatusCode)
	}
	return nil
}

func (z *zipkinExporter) Shutdown(context.Context) error {
	z.client.CloseIdleConnections()
	return nil
}

func attrString(a attribute.KeyValue) string {
	if a.Value.Type() == attribute.STRING {
		return a.Value.AsString()
	}
	return a.Value.Emit()
}
