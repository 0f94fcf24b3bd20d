package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgecert/edgecert/acme"
	"github.com/edgecert/edgecert/signal"
)

// metrics is the optional Prometheus endpoint. Gauges are read from the
// daemon's state at scrape time; counters come from events and reports.
type metrics struct {
	reg      *prometheus.Registry
	orders   *prometheus.CounterVec
	orderDur prometheus.Histogram
	reloads  *prometheus.CounterVec
	failures *prometheus.CounterVec
	stepDur  *prometheus.HistogramVec
}

var (
	descNotAfter   = prometheus.NewDesc("edgecert_certificate_not_after_timestamp_seconds", "When the certificate on the volume expires.", []string{"cert"}, nil)
	descRenewAt    = prometheus.NewDesc("edgecert_certificate_renew_at_timestamp_seconds", "When edgecert will renew the certificate, and why.", []string{"cert", "source"}, nil)
	descState      = prometheus.NewDesc("edgecert_certificate_state", "1 for the certificate's current state.", []string{"cert", "state"}, nil)
	descConnected  = prometheus.NewDesc("edgecert_docker_connected", "1 while the Docker event stream is up.", nil, nil)
	descReconnects = prometheus.NewDesc("edgecert_docker_reconnects_total", "Reconnections to the Docker event stream.", nil, nil)
	descProblems   = prometheus.NewDesc("edgecert_label_problems", "Containers ignored for bad labels.", nil, nil)
)

// statusSource is what the gauges are read from at scrape time (the daemon).
type statusSource interface {
	status() StatusDoc
}

func newMetrics(src statusSource) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		orders: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgecert_orders_total",
			Help: "Certificate orders by result (issued, failed)."}, []string{"result"}),
		orderDur: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "edgecert_order_duration_seconds",
			Help: "Time inside the ACME client per order.", Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgecert_reloads_total",
			Help: "Proxy reload attempts by result (proven, failed, unchanged: already serving)."}, []string{"container", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "edgecert_reload_failures_total",
			Help: "Failed reloads by the step that failed."}, []string{"step"}),
		stepDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "edgecert_reload_step_duration_seconds",
			Help: "Duration of each reload step.", Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"step"}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "edgecert_build_info",
		Help: "1, labelled with edgecert's version and the Go version that built it."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	m.reg.MustRegister(m.orders, m.orderDur, m.reloads, m.failures, m.stepDur, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		collector{src: src})
	return m
}

// CertEvent is acme's EventSink.
func (m *metrics) CertEvent(_ string, e acme.Event, _ acme.CertStatus) {
	switch e.Kind {
	case acme.EventIssued:
		m.orders.WithLabelValues("issued").Inc()
		m.orderDur.Observe(float64(e.TookMS) / 1000)
	case acme.EventOrderFailed:
		m.orders.WithLabelValues("failed").Inc()
	}
}

// report counts one reload report.
func (m *metrics) report(r signal.Report) {
	result := "unchanged"
	switch {
	case !r.OK:
		result = "failed"
		m.failures.WithLabelValues(r.FailedStep).Inc()
	case r.Reloaded:
		result = "proven"
	}
	m.reloads.WithLabelValues(r.Container, result).Inc()
	for _, s := range r.Steps {
		m.stepDur.WithLabelValues(s.Step).Observe(float64(s.TookMS) / 1000)
	}
}

// serve answers /metrics on addr until ctx ends.
func (m *metrics) serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	return serveUntil(ctx, ln, mux, "metrics")
}

// collector reads the gauges from the daemon at scrape time.
type collector struct {
	src statusSource
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descNotAfter, descRenewAt, descState, descConnected, descReconnects, descProblems} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	doc := c.src.status()
	for _, s := range doc.Certificates {
		if !s.NotAfter.IsZero() {
			ch <- prometheus.MustNewConstMetric(descNotAfter, prometheus.GaugeValue, float64(s.NotAfter.Unix()), s.Name)
		}
		if !s.RenewAt.IsZero() {
			ch <- prometheus.MustNewConstMetric(descRenewAt, prometheus.GaugeValue, float64(s.RenewAt.Unix()), s.Name, string(s.RenewSource))
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, 1, s.Name, string(s.State))
	}
	h := doc.Docker
	connected := 0.0
	if h.Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, connected)
	ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(h.Reconnects))
	ch <- prometheus.MustNewConstMetric(descProblems, prometheus.GaugeValue, float64(len(doc.Problems)))
}

// eventSinks hands each certificate event to several listeners.
type eventSinks []acme.EventSink

func (s eventSinks) CertEvent(name string, e acme.Event, st acme.CertStatus) {
	for _, k := range s {
		k.CertEvent(name, e, st)
	}
}
